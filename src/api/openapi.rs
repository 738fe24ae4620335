//! The OpenAPI document, generated from the handlers' annotations, and a browsable page
//! that renders it with no assets from outside the box.

use axum::response::Html;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::Json;

#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "casegraph", description = "Customer-care workflow engine: intake, cases, human tasks, workflows."),
    paths(
        super::requests::create,
        super::cases::show,
        super::cases::audit,
        super::tasks::list,
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
    ),
    components(schemas(
        super::error::ErrorBody,
        super::error::ErrorDetail,
        super::workflows::GraphFormat
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
