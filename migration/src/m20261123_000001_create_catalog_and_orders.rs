use sea_orm_migration::prelude::*;

use crate::columns::{instant, money};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Products::Table)
                    .col(ColumnDef::new(Products::Id).integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(Products::Code).string_len(64).not_null().unique_key())
                    .col(ColumnDef::new(Products::Name).string_len(128).not_null())
                    .col(ColumnDef::new(Products::Description).string_len(512).not_null())
                    .col(money(Products::Price).not_null())
                    .col(ColumnDef::new(Products::FaceValue).decimal_len(16, 2).not_null())
                    .col(ColumnDef::new(Products::FaceCurrency).string_len(8).not_null())
                    .col(ColumnDef::new(Products::Carrier).string_len(64).not_null())
                    .col(ColumnDef::new(Products::Active).boolean().not_null())
                    .col(ColumnDef::new(Products::SortOrder).integer().not_null())
                    .col(instant(manager, Products::CreatedAt).not_null())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Orders::Table)
                    .col(ColumnDef::new(Orders::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(Orders::OrderNumber).string_len(32).not_null().unique_key())
                    .col(ColumnDef::new(Orders::Openid).string_len(128).not_null())
                    .col(ColumnDef::new(Orders::ProductId).integer().not_null())
                    .col(ColumnDef::new(Orders::ProductName).string_len(128).not_null())
                    .col(ColumnDef::new(Orders::PhoneNumber).string_len(16).not_null())
                    .col(money(Orders::Amount).not_null())
                    .col(ColumnDef::new(Orders::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Orders::PrepayId).string_len(128).null())
                    .col(ColumnDef::new(Orders::PrepayParams).text().null())
                    .col(instant(manager, Orders::PrepayAt).null())
                    .col(ColumnDef::new(Orders::TransactionId).string_len(64).null())
                    .col(instant(manager, Orders::PaidAt).null())
                    .col(ColumnDef::new(Orders::Anomaly).string_len(512).null())
                    .col(instant(manager, Orders::CreatedAt).not_null())
                    .col(instant(manager, Orders::UpdatedAt).not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_orders_product")
                            .from(Orders::Table, Orders::ProductId)
                            .to(Products::Table, Products::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // "my orders, newest first"
        manager
            .create_index(
                Index::create()
                    .name("idx_orders_openid_created")
                    .table(Orders::Table)
                    .col(Orders::Openid)
                    .col(Orders::CreatedAt)
                    .to_owned(),
            )
            .await?;
        // sweeps and the operator's list, both by status
        manager
            .create_index(
                Index::create()
                    .name("idx_orders_status_updated")
                    .table(Orders::Table)
                    .col(Orders::Status)
                    .col(Orders::UpdatedAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(PaymentEvents::Table)
                    .col(ColumnDef::new(PaymentEvents::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(PaymentEvents::OrderNumber).string_len(64).not_null())
                    .col(ColumnDef::new(PaymentEvents::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(PaymentEvents::Outcome).string_len(32).not_null())
                    .col(ColumnDef::new(PaymentEvents::Detail).string_len(512).null())
                    .col(ColumnDef::new(PaymentEvents::Headers).text().not_null())
                    .col(ColumnDef::new(PaymentEvents::Body).text().not_null())
                    .col(instant(manager, PaymentEvents::ReceivedAt).not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_payment_events_order")
                    .table(PaymentEvents::Table)
                    .col(PaymentEvents::OrderNumber)
                    .to_owned(),
            )
            .await?;

        seed_catalog(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(PaymentEvents::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Orders::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Products::Table).to_owned()).await
    }
}

/// A small default catalog so a fresh install can sell; operators edit the table afterwards.
async fn seed_catalog(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let now = chrono_now();
    type Row<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str, &'a str, i32);
    let rows: [Row; 4] = [
        (
            "UNITEL-5000",
            "Unitel 5,000 MNT",
            "Unitel (Mongolia) prepaid credit, 5,000 MNT",
            "12.00",
            "5000",
            "MNT",
            "Unitel",
            10,
        ),
        (
            "UNITEL-10000",
            "Unitel 10,000 MNT",
            "Unitel (Mongolia) prepaid credit, 10,000 MNT",
            "23.00",
            "10000",
            "MNT",
            "Unitel",
            20,
        ),
        (
            "MOBICOM-5000",
            "Mobicom 5,000 MNT",
            "Mobicom (Mongolia) prepaid credit, 5,000 MNT",
            "12.00",
            "5000",
            "MNT",
            "Mobicom",
            30,
        ),
        (
            "MOBICOM-10000",
            "Mobicom 10,000 MNT",
            "Mobicom (Mongolia) prepaid credit, 10,000 MNT",
            "23.00",
            "10000",
            "MNT",
            "Mobicom",
            40,
        ),
    ];
    let mut insert = Query::insert();
    insert.into_table(Products::Table).columns([
        Products::Code,
        Products::Name,
        Products::Description,
        Products::Price,
        Products::FaceValue,
        Products::FaceCurrency,
        Products::Carrier,
        Products::Active,
        Products::SortOrder,
        Products::CreatedAt,
    ]);
    for (code, name, description, price, face_value, currency, carrier, sort) in rows {
        let price: sea_orm_migration::sea_orm::prelude::Decimal =
            price.parse().map_err(|e| DbErr::Custom(format!("seed price: {e}")))?;
        let face: sea_orm_migration::sea_orm::prelude::Decimal =
            face_value.parse().map_err(|e| DbErr::Custom(format!("seed face value: {e}")))?;
        insert.values_panic([
            code.into(),
            name.into(),
            description.into(),
            price.into(),
            face.into(),
            currency.into(),
            carrier.into(),
            true.into(),
            sort.into(),
            now.into(),
        ]);
    }
    manager.exec_stmt(insert).await
}

fn chrono_now() -> sea_orm_migration::sea_orm::prelude::DateTime {
    sea_orm_migration::sea_orm::prelude::ChronoUtc::now().naive_utc()
}

#[derive(DeriveIden)]
enum Products {
    Table,
    Id,
    Code,
    Name,
    Description,
    Price,
    FaceValue,
    FaceCurrency,
    Carrier,
    Active,
    SortOrder,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Orders {
    Table,
    Id,
    OrderNumber,
    Openid,
    ProductId,
    ProductName,
    PhoneNumber,
    Amount,
    Status,
    PrepayId,
    PrepayParams,
    PrepayAt,
    TransactionId,
    PaidAt,
    Anomaly,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PaymentEvents {
    Table,
    Id,
    OrderNumber,
    Kind,
    Outcome,
    Detail,
    Headers,
    Body,
    ReceivedAt,
}
