//! `GET /api/search?q=...`: case-insensitive product-name search over the catalogue.

use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use serde::Serialize;

use super::Params;
use super::products::product;
use crate::error::ApiError;

/// Longest accepted query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Most results returned.
pub const MAX_RESULTS: usize = 10;
/// Products searched (ids `1..=SEARCH_SCOPE`): bounds the work per request.
const SEARCH_SCOPE: u32 = 5_000;

/// One search hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hit {
    id: u32,
    name: String,
    price_cents: u64,
}

/// The search response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchResults {
    query: String,
    count: usize,
    results: Vec<Hit>,
}

/// Up to [`MAX_RESULTS`] products whose name contains `query` (case-insensitive), lowest id first.
pub fn search_products(query: &str) -> SearchResults {
    let needle = query.to_lowercase();
    let results: Vec<Hit> = (1..=SEARCH_SCOPE)
        .map(product)
        .filter(|p| p.name().to_lowercase().contains(&needle))
        .take(MAX_RESULTS)
        .map(|p| {
            let (id, name, price_cents) = p.summary();
            Hit {
                id,
                name: name.to_owned(),
                price_cents,
            }
        })
        .collect();
    SearchResults {
        query: query.to_owned(),
        count: results.len(),
        results,
    }
}

pub(super) async fn search(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<SearchResults>, ApiError> {
    let params = Params::new(query)?;
    let q = params
        .one("q")?
        .ok_or_else(|| ApiError::bad_request("missing_query", "q is required"))?
        .trim();
    if q.is_empty() {
        return Err(ApiError::bad_request("empty_query", "q must not be empty"));
    }
    if q.chars().count() > MAX_QUERY_CHARS {
        return Err(ApiError::bad_request(
            "query_too_long",
            format!("q must be at most {MAX_QUERY_CHARS} characters"),
        ));
    }
    Ok(Json(search_products(q)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_matching_products() {
        let r = search_products("LAMP");
        assert_eq!(r.count, MAX_RESULTS);
        assert!(r.results.iter().all(|h| h.name.contains("Lamp")));
        assert!(r.results.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(search_products("lamp"), search_products("lamp"));
    }

    #[test]
    fn no_match_is_empty() {
        let r = search_products("unobtainium");
        assert_eq!(r.count, 0);
        assert!(r.results.is_empty());
    }
}
