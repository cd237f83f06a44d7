//! The catalog for operators: every product, selling or not, and its changes.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::admin::Admin;
use super::extract::{ApiJson, ApiPath};
use super::orders::{utc, utc_opt};
use super::products::ProductResponse;
use crate::app::AppState;
use crate::entities::{catalog_change, product};
use crate::error::{ApiError, ErrorBody};
use crate::services::catalog::{self, ProductFields};

/// Who changed the catalog, as recorded: one admin token, one name.
const ACTOR: &str = "admin";

/// A product as operators see it: the buyer's view plus what only operators manage.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminProductResponse {
    #[serde(flatten)]
    pub product: ProductResponse,
    #[schema(example = "UNITEL-5000")]
    pub code: String,
    /// What the carrier adapter sends for this product (an operator id, a SKU).
    #[schema(example = "UNITEL-5000")]
    pub carrier_reference: String,
    /// On sale: listed in `GET /products` and orderable.
    pub enabled: bool,
    pub sort_order: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<product::Model> for AdminProductResponse {
    fn from(p: product::Model) -> Self {
        AdminProductResponse {
            code: p.code.clone(),
            carrier_reference: p.carrier_reference.clone(),
            enabled: p.active,
            sort_order: p.sort_order,
            created_at: utc(p.created_at),
            updated_at: utc_opt(p.updated_at),
            product: p.into(),
        }
    }
}

/// A new product.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateProductRequest {
    /// Unique; sent to the carrier as the product code.
    #[schema(example = "UNITEL-5000", pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub code: String,
    #[schema(example = "Unitel 5,000 MNT", min_length = 1, max_length = 128)]
    pub name: String,
    #[schema(max_length = 512)]
    pub description: Option<String>,
    /// Yuan, more than 0.00.
    #[schema(example = "12.00", pattern = "^[0-9]{1,10}(\\.[0-9]{1,2})?$")]
    pub price: String,
    #[schema(example = "5000", pattern = "^[0-9]{1,12}(\\.[0-9]{1,2})?$")]
    pub face_value: String,
    /// ISO 4217.
    #[schema(example = "MNT", pattern = "^[A-Z]{3}$")]
    pub face_currency: String,
    /// ISO 3166-1 alpha-2, of the phone numbers this product tops up.
    #[schema(example = "MN", pattern = "^[A-Z]{2}$")]
    pub country: String,
    #[schema(example = "Unitel", min_length = 1, max_length = 64)]
    pub carrier: String,
    #[schema(example = "UNITEL-5000", min_length = 1, max_length = 128)]
    pub carrier_reference: String,
    /// Default: on sale.
    pub enabled: Option<bool>,
    /// Default: after the last product.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub sort_order: Option<i32>,
}

/// The fields to change; the others stay as they are.
#[derive(Deserialize, ToSchema, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateProductRequest {
    #[schema(example = "UNITEL-5000", pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub code: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    pub name: Option<String>,
    #[schema(max_length = 512)]
    pub description: Option<String>,
    #[schema(example = "13.00", pattern = "^[0-9]{1,10}(\\.[0-9]{1,2})?$")]
    pub price: Option<String>,
    #[schema(pattern = "^[0-9]{1,12}(\\.[0-9]{1,2})?$")]
    pub face_value: Option<String>,
    #[schema(pattern = "^[A-Z]{3}$")]
    pub face_currency: Option<String>,
    #[schema(pattern = "^[A-Z]{2}$")]
    pub country: Option<String>,
    #[schema(min_length = 1, max_length = 64)]
    pub carrier: Option<String>,
    #[schema(min_length = 1, max_length = 128)]
    pub carrier_reference: Option<String>,
    /// `false` stops selling it (orders already placed are not affected).
    pub enabled: Option<bool>,
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub sort_order: Option<i32>,
}

impl From<CreateProductRequest> for ProductFields {
    fn from(r: CreateProductRequest) -> Self {
        ProductFields {
            code: Some(r.code),
            name: Some(r.name),
            description: r.description,
            price: Some(r.price),
            face_value: Some(r.face_value),
            face_currency: Some(r.face_currency),
            country: Some(r.country),
            carrier: Some(r.carrier),
            carrier_reference: Some(r.carrier_reference),
            enabled: r.enabled,
            sort_order: r.sort_order,
        }
    }
}

impl From<UpdateProductRequest> for ProductFields {
    fn from(r: UpdateProductRequest) -> Self {
        ProductFields {
            code: r.code,
            name: r.name,
            description: r.description,
            price: r.price,
            face_value: r.face_value,
            face_currency: r.face_currency,
            country: r.country,
            carrier: r.carrier,
            carrier_reference: r.carrier_reference,
            enabled: r.enabled,
            sort_order: r.sort_order,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReorderRequest {
    /// Every product's id, each once, in the order buyers should see them.
    #[schema(example = json!([2, 1, 3]), max_items = 1000)]
    pub ids: Vec<i32>,
}

/// One change to the catalog.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogChangeResponse {
    pub id: i64,
    pub product_id: i32,
    /// Who made it.
    #[schema(example = "admin")]
    pub actor: String,
    /// `created`, `updated`, `reordered`, `demo_removed`.
    #[schema(example = "updated")]
    pub action: String,
    /// The product before (JSON), none when created.
    pub before: Option<serde_json::Value>,
    /// The product after (JSON), none when removed.
    pub after: Option<serde_json::Value>,
    pub changed_at: DateTime<Utc>,
}

impl From<catalog_change::Model> for CatalogChangeResponse {
    fn from(c: catalog_change::Model) -> Self {
        let json = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
        CatalogChangeResponse {
            id: c.id,
            product_id: c.product_id,
            actor: c.actor,
            action: c.action,
            before: json(c.before),
            after: json(c.after),
            changed_at: utc(c.changed_at),
        }
    }
}

fn products(list: Vec<product::Model>) -> Json<Vec<AdminProductResponse>> {
    Json(list.into_iter().map(Into::into).collect())
}

/// Every product, on sale or not, in catalog order.
#[utoipa::path(get, path = "/admin/products", operation_id = "admin_list_products", tag = "admin", security(("admin" = [])),
    responses(
        (status = 200, description = "The catalog", body = [AdminProductResponse]),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn list_products(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<AdminProductResponse>>, ApiError> {
    Ok(products(catalog::list_all(&state.db).await?))
}

/// Adds a product; buyers see it at once if it is enabled. Recorded in the product's changes.
#[utoipa::path(post, path = "/admin/products", tag = "admin", security(("admin" = [])),
    request_body = CreateProductRequest,
    responses(
        (status = 201, description = "Created", body = AdminProductResponse),
        (status = 400, description = "`INVALID_REQUEST`: a field breaks its rule (named in the message), or the body could not be read; `INVALID_JSON`", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 409, description = "`PRODUCT_CODE_TAKEN`", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not sent as application/json", body = ErrorBody),
        (status = 422, description = "`INVALID_BODY`: a field missing, mistyped or unknown", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn create_product(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(request): ApiJson<CreateProductRequest>,
) -> Result<(StatusCode, Json<AdminProductResponse>), ApiError> {
    let created = catalog::create(&state.db, ACTOR, &request.into()).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Changes a product: its price, its texts, whether it is on sale. Orders already placed keep what
/// they were sold. Recorded with the product before and after.
#[utoipa::path(patch, path = "/admin/products/{id}", tag = "admin", security(("admin" = [])),
    params(("id" = i32, Path, minimum = 1, example = 1)),
    request_body = UpdateProductRequest,
    responses(
        (status = 200, description = "The product as it is now", body = AdminProductResponse),
        (status = 400, description = "`INVALID_REQUEST`: a field breaks its rule (named in the message), the id is not a number, or the body could not be read; `INVALID_JSON`", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`PRODUCT_NOT_FOUND`; `NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 409, description = "`PRODUCT_CODE_TAKEN`", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not sent as application/json", body = ErrorBody),
        (status = 422, description = "`INVALID_BODY`: a field mistyped or unknown", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn update_product(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<i32>,
    ApiJson(request): ApiJson<UpdateProductRequest>,
) -> Result<Json<AdminProductResponse>, ApiError> {
    Ok(Json(catalog::update(&state.db, ACTOR, id, &request.into()).await?.into()))
}

/// Sets the order buyers see the products in.
#[utoipa::path(post, path = "/admin/products/reorder", tag = "admin", security(("admin" = [])),
    request_body = ReorderRequest,
    responses(
        (status = 200, description = "The catalog in its new order", body = [AdminProductResponse]),
        (status = 400, description = "`INVALID_REQUEST`: the ids are not every product exactly once, or the body could not be read; `INVALID_JSON`", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`: the body is not sent as application/json", body = ErrorBody),
        (status = 422, description = "`INVALID_BODY`: ids missing or not a list of integers", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn reorder_products(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(request): ApiJson<ReorderRequest>,
) -> Result<Json<Vec<AdminProductResponse>>, ApiError> {
    Ok(products(catalog::reorder(&state.db, ACTOR, &request.ids).await?))
}

/// A product's changes, newest first: who, what, before and after.
#[utoipa::path(get, path = "/admin/products/{id}/changes", tag = "admin", security(("admin" = [])),
    params(("id" = i32, Path, minimum = 1, example = 1)),
    responses(
        (status = 200, description = "The changes", body = [CatalogChangeResponse]),
        (status = 400, description = "`INVALID_REQUEST`: the id is not a number", body = ErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: wrong or missing bearer token", body = ErrorBody),
        (status = 404, description = "`PRODUCT_NOT_FOUND`; `NOT_FOUND`: no ADMIN_TOKEN configured", body = ErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = ErrorBody),
    ))]
pub async fn product_changes(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<i32>,
) -> Result<Json<Vec<CatalogChangeResponse>>, ApiError> {
    Ok(Json(catalog::changes(&state.db, id).await?.into_iter().map(Into::into).collect()))
}
