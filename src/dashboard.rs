//! The relay's live dashboard, `GET /_relay/`: one self-contained HTML page
//! (inline CSS and JS, no external URL) that polls `/_relay/status` every
//! second and drives the simulator's controls. The page itself lives in
//! `dashboard.html` beside this file, so it can be edited as HTML.

/// The page, embedded in the binary.
pub const PAGE: &str = include_str!("dashboard.html");

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn the_page_is_self_contained() {
        assert!(PAGE.starts_with("<!doctype html>") || PAGE.starts_with("<!DOCTYPE html>"));
        assert!(
            !PAGE.contains("http://") && !PAGE.contains("https://"),
            "no external URL"
        );
        assert!(
            !PAGE.contains("src=\"//") && !PAGE.contains("href=\"//"),
            "no protocol-relative URL"
        );
        // It polls the relay's status: API base plus "/status".
        assert!(PAGE.contains("\"/_relay\"") && PAGE.contains("\"/status\""));
    }

    #[test]
    fn the_balancer_list_offers_every_strategy() {
        for name in crate::balancer::NAMES {
            assert!(
                PAGE.contains(&format!("<option>{name}</option>")),
                "{name} missing from the dashboard's balancer list"
            );
        }
    }
}
