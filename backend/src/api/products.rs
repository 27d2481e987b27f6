//! `GET /api/products/{id}`: a catalogue product derived from its id.

use axum::Json;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use serde::Serialize;

use super::record_id;
use super::seed::{between, pick, seed};
use crate::error::ApiError;

const TABLE: u64 = 0x7072_6f64; // "prod"

const ADJECTIVES: &[&str] = &[
    "Classic",
    "Compact",
    "Deluxe",
    "Ergonomic",
    "Foldable",
    "Handmade",
    "Modern",
    "Portable",
    "Rugged",
    "Sleek",
    "Smart",
    "Vintage",
];
const MATERIALS: &[&str] = &[
    "Bamboo", "Ceramic", "Copper", "Cotton", "Glass", "Leather", "Oak", "Steel",
];
/// Product kinds and the category each belongs to.
const KINDS: &[(&str, &str)] = &[
    ("Backpack", "bags"),
    ("Bottle", "kitchen"),
    ("Chair", "furniture"),
    ("Desk", "furniture"),
    ("Headphones", "electronics"),
    ("Keyboard", "electronics"),
    ("Kettle", "kitchen"),
    ("Lamp", "home"),
    ("Mug", "kitchen"),
    ("Notebook", "stationery"),
    ("Pen", "stationery"),
    ("Speaker", "electronics"),
    ("Tote", "bags"),
    ("Vase", "home"),
];

/// A demo catalogue product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Product {
    id: u32,
    sku: String,
    name: String,
    category: &'static str,
    price_cents: u64,
    currency: &'static str,
    stock: u64,
    in_stock: bool,
}

impl Product {
    /// Id, name and price: what a search result shows.
    pub fn summary(&self) -> (u32, &str, u64) {
        (self.id, &self.name, self.price_cents)
    }

    /// The display name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The product with this id (any id works; the route limits the range).
pub fn product(id: u32) -> Product {
    let s = |field| seed(TABLE, u64::from(id), field);
    let (kind, category) = pick(KINDS, s(3)).unwrap_or(("Mug", "kitchen"));
    let name = format!(
        "{} {} {kind}",
        pick(ADJECTIVES, s(1)).unwrap_or("Classic"),
        pick(MATERIALS, s(2)).unwrap_or("Ceramic"),
    );
    // Stock is zero for about one product in eight.
    let stock = if between(0, 7, s(5)) == 0 {
        0
    } else {
        between(1, 500, s(6))
    };
    Product {
        id,
        sku: format!(
            "{}-{}",
            category.get(..3).unwrap_or(category).to_ascii_uppercase(),
            hex::encode_upper(&s(7).to_be_bytes()[..3])
        ),
        name,
        category,
        // Prices end in 99 cents, like a real shop.
        price_cents: between(4, 499, s(4)) * 100 + 99,
        currency: "USD",
        stock,
        in_stock: stock > 0,
    }
}

pub(super) async fn get_product(
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Product>, ApiError> {
    let id = record_id(path, "product", "product_not_found")?;
    Ok(Json(product(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_deterministic_and_consistent() {
        assert_eq!(product(9), product(9));
        for id in 1..200 {
            let p = product(id);
            assert_eq!(p.in_stock, p.stock > 0);
            assert_eq!(p.price_cents % 100, 99);
            assert_eq!(p.sku.len(), 10, "{}", p.sku);
        }
    }
}
