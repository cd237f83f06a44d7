use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::domain::Money;
use crate::entities::product;
use crate::error::{ApiError, ErrorBody};
use crate::services::orders;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductResponse {
    #[schema(example = 1)]
    pub id: i32,
    #[schema(example = "Unitel 5,000 MNT")]
    pub name: String,
    pub description: String,
    /// What the buyer pays, in yuan.
    #[schema(example = "12.00")]
    pub price: String,
    /// What the phone receives, in `faceCurrency`.
    #[schema(example = "5000")]
    pub face_value: String,
    #[schema(example = "MNT")]
    pub face_currency: String,
    #[schema(example = "Unitel")]
    pub carrier: String,
    /// ISO 3166-1 alpha-2, of the phone numbers it tops up (empty when the operator has not said).
    #[schema(example = "MN")]
    pub country: String,
}

impl From<product::Model> for ProductResponse {
    fn from(p: product::Model) -> Self {
        ProductResponse {
            id: p.id,
            name: p.name,
            description: p.description,
            price: Money::from_stored(p.price).to_string(),
            face_value: p.face_value.normalize().to_string(),
            face_currency: p.face_currency,
            carrier: p.carrier,
            country: p.country,
        }
    }
}

/// The top-up products on sale.
#[utoipa::path(get, path = "/products", tag = "catalog",
    responses(
        (status = 200, description = "Active products in catalog order", body = [ProductResponse]),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn list_products(State(state): State<AppState>) -> Result<Json<Vec<ProductResponse>>, ApiError> {
    let products = orders::list_products(&state.db).await?;
    Ok(Json(products.into_iter().map(ProductResponse::from).collect()))
}
