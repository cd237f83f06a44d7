use sea_orm_migration::prelude::*;

use crate::columns::instant;

/// The catalog becomes the operator's: `products.country` (ISO 3166-1 alpha-2) and
/// `products.carrier_reference` (what the carrier calls the product: an operator id, a SKU), both
/// snapshotted on each order so a later edit never changes what an order delivers; `products.updated_at`;
/// and `catalog_changes`, one row per change with who made it and the product before and after.
/// The demo products the first migration seeded get the reference they were sold by (their code) and
/// their country; whether an instance keeps them is decided at start-up (development only).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one column per ALTER TABLE.
        let products = [
            ColumnDef::new(Products::Country).string_len(2).not_null().default("").to_owned(),
            ColumnDef::new(Products::CarrierReference).string_len(128).not_null().default("").to_owned(),
            instant(manager, Products::UpdatedAt).null().to_owned(),
        ];
        for column in products {
            manager.alter_table(Table::alter().table(Products::Table).add_column(column).to_owned()).await?;
        }
        let orders = [
            ColumnDef::new(Orders::Country).string_len(2).null().to_owned(),
            ColumnDef::new(Orders::CarrierReference).string_len(128).null().to_owned(),
        ];
        for column in orders {
            manager.alter_table(Table::alter().table(Orders::Table).add_column(column).to_owned()).await?;
        }
        let reference = Query::update()
            .table(Products::Table)
            .value(Products::CarrierReference, Expr::col(Products::Code))
            .to_owned();
        manager.exec_stmt(reference).await?;
        let mongolia = Query::update()
            .table(Products::Table)
            .value(Products::Country, "MN")
            .and_where(Expr::col(Products::FaceCurrency).eq("MNT"))
            .to_owned();
        manager.exec_stmt(mongolia).await?;

        manager
            .create_table(
                Table::create()
                    .table(CatalogChanges::Table)
                    .col(ColumnDef::new(CatalogChanges::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(CatalogChanges::ProductId).integer().not_null())
                    .col(ColumnDef::new(CatalogChanges::Actor).string_len(64).not_null())
                    .col(ColumnDef::new(CatalogChanges::Action).string_len(32).not_null())
                    .col(ColumnDef::new(CatalogChanges::Before).text().null())
                    .col(ColumnDef::new(CatalogChanges::After).text().null())
                    .col(instant(manager, CatalogChanges::ChangedAt).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_catalog_changes_product")
                    .table(CatalogChanges::Table)
                    .col(CatalogChanges::ProductId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(CatalogChanges::Table).to_owned()).await?;
        for column in [Orders::CarrierReference, Orders::Country] {
            manager.alter_table(Table::alter().table(Orders::Table).drop_column(column).to_owned()).await?;
        }
        for column in [Products::UpdatedAt, Products::CarrierReference, Products::Country] {
            manager.alter_table(Table::alter().table(Products::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Products {
    Table,
    Code,
    FaceCurrency,
    Country,
    CarrierReference,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    Country,
    CarrierReference,
}

#[derive(DeriveIden)]
enum CatalogChanges {
    Table,
    Id,
    ProductId,
    /// Who: the admin token's label.
    Actor,
    /// `created`, `updated`, `reordered`, `demo_removed`.
    Action,
    /// The product as JSON before the change (none when created).
    Before,
    /// The product as JSON after the change (none when removed).
    After,
    ChangedAt,
}
