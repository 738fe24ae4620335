//! The console's pages at `/console`: static HTML, CSS and ES modules from `console/`,
//! built into the binary so the box serves it offline. Serving them needs no token (they
//! hold no data); the strict content security policy below keeps them from loading
//! anything from elsewhere.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::super::{AppError, Path};

/// Every file of the console: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../../../console/index.html"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../../console/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/app.js"),
    ),
    (
        "dom.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/dom.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/api.js"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/i18n.js"),
    ),
    (
        "graph.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/graph.js"),
    ),
    (
        "diff.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/diff.js"),
    ),
    (
        "workflows.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/workflows.js"),
    ),
    (
        "tryit.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/tryit.js"),
    ),
    (
        "inbox.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/inbox.js"),
    ),
    (
        "why.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/why.js"),
    ),
    (
        "cases.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/cases.js"),
    ),
    (
        "status.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/status.js"),
    ),
    (
        "fleet.js",
        "text/javascript; charset=utf-8",
        include_str!("../../../console/fleet.js"),
    ),
];

/// `/console`, `/console/` and `/console/{file}`.
/// Generic over the state: the fleet hub serves the same pages.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(|| asset("index.html")))
        .route(
            "/console/{file}",
            get(|Path(file): Path<String>| asset_owned(file)),
        )
}

async fn asset_owned(file: String) -> Response {
    asset(&file).await
}

async fn asset(file: &str) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "no-cache"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; object-src 'none'; frame-ancestors 'none'",
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => AppError::not_found("console file", file).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    #[test]
    fn console_loads_nothing_from_elsewhere() {
        for (name, _, body) in ASSETS {
            // The SVG namespace is a name, not something fetched.
            let body = body.replace("http://www.w3.org/2000/svg", "");
            for needle in ["http://", "https://", "//cdn", "@import url("] {
                assert!(
                    !body.contains(needle),
                    "console/{name} refers to something outside the box: {needle}"
                );
            }
        }
    }
}
