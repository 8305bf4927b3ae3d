//! The booking API of SPEC §2: method + path to a [`Response`], through the
//! node's cache or its store.
//!
//! Routing is split in two so `Expect: 100-continue` can be answered from the
//! head alone: [`resolve`] decides the route (404, 405) and [`check_content_type`]
//! the media type (415) without the body; [`handle`] then does the work.
//!
//! This file only translates HTTP to the node's booking operations and back:
//! [`Node::list`], [`Node::create`], [`Node::read_booking`] (cache first),
//! [`Node::update`] and [`Node::delete`]. Those own the store and the cache:
//! a write is committed, and only then is the id dropped from this node's
//! cache and the 2xx answered; other nodes learn of it through the store's
//! change log; a killed node commits nothing more.

use super::{InProgress, Node};
use crate::booking::{is_valid_id, Booking};
use crate::http::conn::Handler;
use crate::http::{booking_id_in_path, percent_decode, Request, Response};
use crate::json;
use crate::store::{Created, Error as StoreError};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

/// Largest page a client may ask for; bigger pages would make one response
/// several hundred kilobytes of JSON.
pub const MAX_PAGE: usize = 1000;

/// The page size when the client does not say.
pub const DEFAULT_PAGE: usize = 50;

/// Longest accepted `Idempotency-Key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 200;

/// The node as the HTTP server sees it: each request counted while it runs, answered by
/// [`handle`], and marked with the node's name (`X-Node`).
impl Handler for Node {
    fn precheck(&self, request: &Request) -> Option<Response> {
        precheck(request)
    }

    fn handle(&self, request: Request, _peer: SocketAddr) -> Response {
        let _counted = InProgress::enter(&self.in_progress);
        handle(self, &request)
    }

    fn decorate(&self, response: &mut Response) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        response.headers.push(("X-Node", self.name.clone()));
    }
}

/// Where a request goes, decided from its method and path alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Stats,
    List,
    Create,
    Read(String),
    Update(String),
    Delete(String),
}

/// The route for `method` and `path`, or the 404/405 answer.
pub fn resolve(method: &str, path: &str) -> Result<Route, Response> {
    let read = matches!(method, "GET" | "HEAD");
    match path {
        "/health" if read => Ok(Route::Health),
        "/health" => Err(Response::method_not_allowed("GET, HEAD")),
        "/stats" if read => Ok(Route::Stats),
        "/stats" => Err(Response::method_not_allowed("GET, HEAD")),
        "/bookings" if read => Ok(Route::List),
        "/bookings" if method == "POST" => Ok(Route::Create),
        "/bookings" => Err(Response::method_not_allowed("GET, HEAD, POST")),
        _ => {
            let Some(id) = booking_id_in_path(path).map(|id| id.into_owned()) else {
                return Err(not_found_path(path));
            };
            match method {
                "GET" | "HEAD" => Ok(Route::Read(id)),
                "PATCH" => Ok(Route::Update(id)),
                "DELETE" => Ok(Route::Delete(id)),
                _ => Err(Response::method_not_allowed("GET, HEAD, PATCH, DELETE")),
            }
        }
    }
}

/// 415 unless a body-carrying route was sent `application/json`.
pub fn check_content_type(route: &Route, request: &Request) -> Result<(), Response> {
    if !matches!(route, Route::Create | Route::Update(_)) {
        return Ok(());
    }
    let media_type = request
        .header("content-type")
        .map(|value| value.split(';').next().unwrap_or("").trim());
    match media_type {
        Some(t) if t.eq_ignore_ascii_case("application/json") => Ok(()),
        Some(other) => Err(Response::error(
            415,
            &format!(
                "send the booking as JSON with Content-Type: application/json (got '{other}')"
            ),
        )),
        None => Err(Response::error(
            415,
            "send the booking as JSON with Content-Type: application/json (the header is missing)",
        )),
    }
}

/// The answer to a request whose body has not been read, if its head already
/// decides it (for `Expect: 100-continue`).
pub fn precheck(request: &Request) -> Option<Response> {
    let route = match resolve(&request.method, request.path()) {
        Ok(route) => route,
        Err(response) => return Some(response),
    };
    check_content_type(&route, request).err()
}

/// Answers one request.
pub fn handle(node: &Node, request: &Request) -> Response {
    let route = match resolve(&request.method, request.path()) {
        Ok(route) => route,
        Err(response) => return response,
    };
    if let Err(response) = check_content_type(&route, request) {
        return response;
    }
    if node.is_failing() && route != Route::Health {
        return Response::error(
            500,
            "this node is failing (made sick from the relay's admin API); it answers only /health",
        );
    }
    if !matches!(route, Route::Health | Route::Stats) && !node.simulate_service_time() {
        return killed(node);
    }
    match route {
        Route::Health => health(node),
        Route::Stats => Response::json(200, node.stats_json()),
        Route::List => list(node, request.query().unwrap_or("")),
        Route::Create => create(node, request),
        Route::Read(id) => read(node, &id),
        Route::Update(id) => update(node, &id, &request.body),
        Route::Delete(id) => delete(node, &id),
    }
}

fn health(node: &Node) -> Response {
    let body = json::Object::new()
        .str("node", node.name())
        .str("status", "ok")
        .finish();
    Response::json(200, body)
}

fn list(node: &Node, query: &str) -> Response {
    let mut limit = DEFAULT_PAGE;
    let mut after: Option<String> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(value) = percent_decode(value) else {
            return Response::error(
                400,
                &format!("the query parameter '{name}' is not valid percent-encoding"),
            );
        };
        match name {
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => limit = n,
                _ => {
                    return Response::error(
                        400,
                        &format!(
                            "limit must be a whole number from 1 to {MAX_PAGE}, got '{value}'"
                        ),
                    )
                }
            },
            "after" => after = Some(value),
            // Unknown parameters are ignored, as most web servers do.
            _ => {}
        }
    }
    let items = match node.list(after.as_deref(), limit) {
        Ok(items) => items,
        Err(error) => return store_error(&error),
    };
    let next_after = match items.last() {
        Some(last) if items.len() == limit => Some(last.booking_id.as_str()),
        _ => None,
    };
    let body = json::Object::new()
        .raw("items", &json::array(items.iter().map(Booking::to_json)))
        .opt_str("next_after", next_after)
        .finish();
    Response::json(200, body)
}

fn create(node: &Node, request: &Request) -> Response {
    let key = match request.header("idempotency-key") {
        None => None,
        Some(key) if !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_BYTES => Some(key),
        Some(_) => {
            return Response::error(
                400,
                &format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes"),
            )
        }
    };
    let value = match parse_body(&request.body) {
        Ok(value) => value,
        Err(response) => return response,
    };
    let booking = match Booking::from_json(&value, crate::rand::uuid_v4) {
        Ok(booking) => booking,
        Err(invalid) => return Response::error(400, &invalid.0),
    };
    let Some(result) = node.create(&booking, key.map(|k| (k, request.body.as_slice()))) else {
        return killed(node);
    };
    match result {
        Ok(Created::New(json)) => created(201, json, &booking.booking_id),
        Ok(Created::Replayed {
            status,
            body,
            booking_id,
        }) => created(status, body, &booking_id),
        Err(error) => store_error(&error),
    }
}

fn created(status: u16, json: String, id: &str) -> Response {
    Response::json(status, json).with_header("Location", format!("/bookings/{id}"))
}

fn read(node: &Node, id: &str) -> Response {
    if !is_valid_id(id) {
        return not_found_booking(id).with_header("X-Cache", "MISS");
    }
    match node.read_booking(id) {
        Ok((Some(json), hit)) => Response::json(200, json.to_string())
            .with_header("X-Cache", if hit { "HIT" } else { "MISS" }),
        Ok((None, _)) => not_found_booking(id).with_header("X-Cache", "MISS"),
        Err(error) => store_error(&error).with_header("X-Cache", "MISS"),
    }
}

fn update(node: &Node, id: &str, body: &[u8]) -> Response {
    if !is_valid_id(id) {
        return not_found_booking(id);
    }
    let patch = match parse_body(body) {
        Ok(value) => value,
        Err(response) => return response,
    };
    let Some(result) = node.update(id, &patch) else {
        return killed(node);
    };
    match result {
        Ok(updated) => Response::json(200, updated.to_json()),
        Err(error) => store_error(&error),
    }
}

fn delete(node: &Node, id: &str) -> Response {
    if !is_valid_id(id) {
        return not_found_booking(id);
    }
    let Some(result) = node.delete(id) else {
        return killed(node);
    };
    match result {
        Ok(()) => Response::new(204),
        Err(error) => store_error(&error),
    }
}

fn parse_body(body: &[u8]) -> Result<json::Value, Response> {
    if body.is_empty() {
        return Err(Response::error(
            400,
            "the body is empty; send a JSON object",
        ));
    }
    json::parse(body).map_err(|e| Response::error(400, &format!("the body is not valid JSON: {e}")))
}

/// The answer of a killed node's handler. Its connection is already cut, so
/// no client reads it; it exists so the handler ends without touching the store.
fn killed(node: &Node) -> Response {
    let mut response = Response::error(
        503,
        &format!("node '{}' was stopped; nothing was written", node.name()),
    );
    response.close = true;
    response
}

fn store_error(error: &StoreError) -> Response {
    let status = match error {
        StoreError::NotFound => 404,
        StoreError::Exists(_) => 409,
        StoreError::KeyReused => 422,
        StoreError::Invalid(_) => 400,
        StoreError::Busy => 503,
        StoreError::Database(detail) => {
            // The detail is for the operator, not the client: it can name
            // tables and SQL.
            eprintln!("node: database error: {detail}");
            return Response::error(
                500,
                "the node could not reach its database; try again, and tell the operator if it persists",
            );
        }
    };
    Response::error(status, &error.to_string())
}

fn not_found_booking(id: &str) -> Response {
    let shown: String = id.chars().take(80).collect();
    Response::error(404, &format!("no booking has id '{shown}'"))
}

fn not_found_path(path: &str) -> Response {
    let shown: String = path.chars().take(80).collect();
    Response::error(
        404,
        &format!("no such path '{shown}'; try /bookings, /bookings/{{id}}, /health or /stats"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve_by_method_and_path() {
        assert_eq!(resolve("GET", "/health"), Ok(Route::Health));
        assert_eq!(resolve("HEAD", "/stats"), Ok(Route::Stats));
        assert_eq!(resolve("GET", "/bookings"), Ok(Route::List));
        assert_eq!(resolve("POST", "/bookings"), Ok(Route::Create));
        assert_eq!(
            resolve("GET", "/bookings/a-1"),
            Ok(Route::Read("a-1".into()))
        );
        assert_eq!(
            resolve("PATCH", "/bookings/a"),
            Ok(Route::Update("a".into()))
        );
        assert_eq!(
            resolve("DELETE", "/bookings/a"),
            Ok(Route::Delete("a".into()))
        );
        assert_eq!(
            resolve("GET", "/bookings/a%2D1"),
            Ok(Route::Read("a-1".into()))
        );
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
        for path in ["/", "/nope", "/bookings/", "/bookings/a/b", "/bookingsx"] {
            assert_eq!(
                resolve("GET", path).map_err(|r| r.status),
                Err(404),
                "{path}"
            );
        }
        let cases = [
            ("DELETE", "/bookings", "GET, HEAD, POST"),
            ("POST", "/bookings/a", "GET, HEAD, PATCH, DELETE"),
            ("PUT", "/bookings/a", "GET, HEAD, PATCH, DELETE"),
            ("POST", "/health", "GET, HEAD"),
        ];
        for (method, path, allow) in cases {
            let response = resolve(method, path).expect_err("405");
            assert_eq!(response.status, 405);
            assert_eq!(response.header("allow"), Some(allow));
        }
    }
}
