//! The OpenAPI document, generated from the handlers' annotations, and a browsable page
//! that renders it with no assets from outside the box.

use axum::response::Html;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::Json;

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "casegraph", description = "Customer-care workflow engine: intake, cases, human tasks, workflows, and what the web console needs beyond them (`/v1/console/…`)."),
    paths(
        super::requests::create,
        super::events::create,
        super::consents::put,
        super::consents::list,
        super::cases::show,
        super::cases::audit,
        super::messages::post,
        super::tasks::list,
        super::tasks::queues,
        super::tasks::complete,
        super::workflows::list,
        super::workflows::show,
        super::workflows::graph,
        super::workflows::publish,
        super::classify::classify,
        super::tokens::create,
        super::tokens::list,
        super::tokens::revoke,
        super::system::healthz,
        super::system::readyz,
        super::system::metrics,
        super::admin::settings,
        super::console::me::me,
        super::console::cases::cases,
        super::console::status::status,
        super::console::definition::definition,
        super::console::versions::versions,
        super::console::fixtures::fixtures,
        super::console::check::check,
        super::console::dry_run::dry_run,
    ),
    components(schemas(
        super::error::ErrorBody,
        super::error::ErrorDetail,
        super::workflows::GraphFormat,
        casegraph_engine::classify::signals::Sentiment,
        casegraph_engine::classify::signals::Frustration,
        casegraph_engine::classify::signals::Tone
    )),
    modifiers(&Bearer),
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /openapi.json` (no token needed: it describes the API, holds no data).
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// `GET /docs`: a small self-contained page listing every operation of `/openapi.json`.
pub async fn page() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::OpenApi;

    use super::ApiDoc;

    /// Routed paths that serve pages, not API operations.
    const PAGES: [&str; 5] = [
        "/openapi.json",
        "/docs",
        "/console",
        "/console/",
        "/console/{file}",
    ];

    /// `(method, path)` of every `.route("path", method(…).method(…))` in `source`.
    fn routes_in(source: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        for piece in source.split(".route(").skip(1) {
            let Some(path) = piece.trim_start().strip_prefix('"') else {
                continue;
            };
            let Some((path, rest)) = path.split_once('"') else {
                continue;
            };
            // The method router: up to the `)` that closes `.route(`.
            let mut depth = 1usize;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(rest.len(), |(i, _)| i);
            let methods = &rest[..end];
            for method in ["get", "post", "put", "patch", "delete"] {
                let called = format!("{method}(");
                let mut at = 0;
                while let Some(i) = methods[at..].find(&called) {
                    let before = methods[..at + i].chars().next_back();
                    if before.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_' && c != ':') {
                        found.push((method.to_string(), path.to_string()));
                    }
                    at += i + called.len();
                }
            }
        }
        found
    }

    #[test]
    fn every_routed_operation_is_in_the_document() {
        let routed: BTreeSet<(String, String)> = [
            include_str!("mod.rs"),
            include_str!("console/mod.rs"),
            include_str!("console/assets.rs"),
        ]
        .into_iter()
        .flat_map(routes_in)
        .filter(|(_, path)| !PAGES.contains(&path.as_str()))
        .collect();
        assert!(
            routed.len() >= 25,
            "the route scan found too few routes: {routed:?}"
        );
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        let missing: Vec<String> = routed
            .iter()
            .filter(|(method, path)| doc["paths"][path][method].is_null())
            .map(|(method, path)| format!("{} {path}", method.to_uppercase()))
            .collect();
        assert!(
            missing.is_empty(),
            "routed but not in /openapi.json: {missing:?}"
        );
        let documented = doc["paths"].as_object().map_or(0, |p| {
            p.values()
                .map(|ops| ops.as_object().map_or(0, |o| o.len()))
                .sum::<usize>()
        });
        assert_eq!(
            documented,
            routed.len(),
            "/openapi.json documents operations no route serves"
        );
    }
}
