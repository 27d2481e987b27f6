//! `GET /api/orders?page=N&page_size=M`: one page of the (fixed, generated) order history.

use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use serde::Serialize;

use super::seed::{between, pick, seed, timestamp};
use super::{MAX_RECORD_ID, Params};
use crate::error::ApiError;

const TABLE: u64 = 0x6f72_6473; // "ords"

/// How many orders the demo history holds.
pub const TOTAL_ORDERS: u64 = 2_500;
/// Largest accepted `page` (pages past the end are empty, not errors).
pub const MAX_PAGE: u64 = 1_000_000;
/// Default and largest `page_size`.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
const MAX_PAGE_SIZE: u64 = 100;

const STATUSES: &[&str] = &[
    "pending",
    "paid",
    "paid",
    "shipped",
    "shipped",
    "delivered",
    "delivered",
    "delivered",
    "cancelled",
    "refunded",
];

/// A demo order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    id: String,
    number: u64,
    user_id: u64,
    status: &'static str,
    item_count: u64,
    amount_cents: u64,
    currency: &'static str,
    created_at: String,
}

/// A page of orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderPage {
    page: u64,
    page_size: u64,
    total: u64,
    total_pages: u64,
    items: Vec<Order>,
}

/// Order number `number` (1-based).
pub fn order(number: u64) -> Order {
    let s = |field| seed(TABLE, number, field);
    let item_count = between(1, 6, s(3));
    Order {
        id: format!("ord_{number:08}"),
        number,
        user_id: between(1, u64::from(MAX_RECORD_ID), s(1)),
        status: pick(STATUSES, s(2)).unwrap_or("paid"),
        item_count,
        amount_cents: item_count * between(499, 19_999, s(4)),
        currency: "USD",
        created_at: timestamp(s(5)),
    }
}

/// Page `page` (1-based) of `page_size` orders, newest numbering last.
pub fn page(page: u64, page_size: u64) -> OrderPage {
    let first = page
        .saturating_sub(1)
        .saturating_mul(page_size)
        .saturating_add(1);
    let last = first.saturating_add(page_size - 1).min(TOTAL_ORDERS);
    OrderPage {
        page,
        page_size,
        total: TOTAL_ORDERS,
        total_pages: TOTAL_ORDERS.div_ceil(page_size),
        items: (first..=last).map(order).collect(),
    }
}

pub(super) async fn list_orders(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<OrderPage>, ApiError> {
    let params = Params::new(query)?;
    let number = params.int_in("page", 1..=MAX_PAGE, 1)?;
    let size = params.int_in("page_size", 1..=MAX_PAGE_SIZE, DEFAULT_PAGE_SIZE)?;
    Ok(Json(page(number, size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_partition_the_history() {
        let p1 = page(1, 20);
        assert_eq!(p1.items.len(), 20);
        assert_eq!(p1.items[0].id, "ord_00000001");
        assert_eq!(page(2, 20).items[0].number, 21);
        assert_eq!(p1.total_pages, 125);
        assert_eq!(page(125, 20).items.len(), 20);
        assert!(page(126, 20).items.is_empty());
        assert_eq!(page(9, 300).items.len(), 100); // 2401..=2500
        assert!(page(MAX_PAGE, 100).items.is_empty());
        assert_eq!(page(3, 7), page(3, 7));
    }
}
