//! The relay's live dashboard, `GET /_relay/`: one self-contained HTML page
//! (inline CSS and JS, no external URL) that polls `/_relay/status` every
//! second and drives the simulator's controls. The page itself lives in
//! `dashboard.html` beside this file, so it can be edited as HTML; its
//! balancer list is rendered from [`crate::balancer::STRATEGIES`].

use crate::balancer::STRATEGIES;
use std::sync::OnceLock;

/// The page as written, embedded in the binary; its `<!-- balancer options -->`
/// line stands for one `<option>` per strategy.
const TEMPLATE: &str = include_str!("dashboard.html");

/// The page as served.
pub fn page() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| {
        let options: String = STRATEGIES
            .iter()
            .map(|strategy| format!("      <option>{}</option>\n", strategy.name))
            .collect();
        TEMPLATE.replace("      <!-- balancer options -->\n", &options)
    })
}

#[cfg(test)]
mod tests {
    use super::page;

    #[test]
    fn the_page_is_self_contained() {
        let page = page();
        assert!(page.starts_with("<!doctype html>") || page.starts_with("<!DOCTYPE html>"));
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no external URL"
        );
        assert!(
            !page.contains("src=\"//") && !page.contains("href=\"//"),
            "no protocol-relative URL"
        );
        // It polls the relay's status: API base plus "/status".
        assert!(page.contains("\"/_relay\"") && page.contains("\"/status\""));
    }

    #[test]
    fn the_balancer_list_offers_every_strategy() {
        let page = page();
        assert!(!page.contains("<!-- balancer options -->"));
        for name in crate::balancer::NAMES {
            assert!(
                page.contains(&format!("<option>{name}</option>")),
                "{name} missing from the dashboard's balancer list"
            );
        }
    }
}
