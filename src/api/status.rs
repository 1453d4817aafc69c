//! `GET /`: the status page, one self-contained HTML file (its CSS and script inline, no
//! external resource) compiled into the binary. It is static, so it is always served; the
//! data it shows comes from the views it fetches (`/api/monitoring/dashboard` and
//! `/api/monitoring/history`, group `dashboard`; `/api/monitoring/metrics/devices`, group
//! `gps`), which keep their own admin rule: from another host the page asks for the token and
//! sends it as `Authorization: Bearer` (kept in the tab's session storage only).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page, as built into the binary.
pub const PAGE: &str = include_str!("status_page.html");

/// What the page may load: only its own inline code and the API of the server that sent it.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// The page's route.
pub(super) fn router() -> Router {
    Router::new().route("/", get(page))
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::PAGE;

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        // No external script, style sheet, image or font: nothing with a source or a link,
        // and the only URL is the SVG namespace (a name, never fetched).
        for needle in [" src=", "<link", "@import", "url(", "https://", "//cdn"] {
            assert!(!PAGE.contains(needle), "the page names {needle:?}");
        }
        let urls = PAGE.matches("http://").count();
        let svg = PAGE.matches("http://www.w3.org/2000/svg").count();
        assert_eq!(urls, svg, "a URL other than the SVG namespace");
        // It fetches only this server's own paths.
        for call in PAGE.split("getJson(\"").skip(1) {
            assert!(call.starts_with("/api/monitoring/"), "{call:.40}");
        }
        // Every number the e2e test compares is marked for it.
        for field in [
            "platform_health.status",
            "queues.summary.total_pending",
            "queues.summary.total_dlq",
            "gps_tcp_server.active_connections",
            "live_tracking.active_devices",
            "alerts.firing_count",
        ] {
            assert!(PAGE.contains(field), "{field} is not on the page");
        }
    }
}
