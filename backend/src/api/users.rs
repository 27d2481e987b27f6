//! `GET /api/users/{id}`: a user account derived from its id.

use axum::Json;
use axum::extract::Path;
use axum::extract::rejection::PathRejection;
use serde::Serialize;

use super::record_id;
use super::seed::{between, pick, seed, timestamp};
use crate::error::ApiError;

const TABLE: u64 = 0x7573_6572; // "user"

const FIRST_NAMES: &[&str] = &[
    "Ada", "Alan", "Barbara", "Claude", "Dennis", "Donald", "Edsger", "Frances", "Grace", "Hedy",
    "John", "Ken", "Leslie", "Margaret", "Niklaus", "Radia", "Shafi", "Sophie", "Tim", "Yukihiro",
];
const LAST_NAMES: &[&str] = &[
    "Allen",
    "Backus",
    "Cerf",
    "Dijkstra",
    "Engelbart",
    "Goldwasser",
    "Hamilton",
    "Hopper",
    "Kahn",
    "Knuth",
    "Lamport",
    "Liskov",
    "Lovelace",
    "Matsumoto",
    "Perlman",
    "Ritchie",
    "Shannon",
    "Thompson",
    "Turing",
    "Wirth",
];
const PLANS: &[&str] = &["free", "free", "free", "pro", "pro", "team", "enterprise"];
const COUNTRIES: &[&str] = &["DE", "FR", "GB", "IN", "JP", "NL", "SE", "US", "US", "BR"];

/// A demo user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    id: u32,
    name: String,
    email: String,
    plan: &'static str,
    country: &'static str,
    active: bool,
    created_at: String,
}

/// The user with this id (any id works; the route limits the range).
pub fn user(id: u32) -> User {
    let s = |field| seed(TABLE, u64::from(id), field);
    let first = pick(FIRST_NAMES, s(1)).unwrap_or("Ada");
    let last = pick(LAST_NAMES, s(2)).unwrap_or("Lovelace");
    User {
        id,
        name: format!("{first} {last}"),
        email: format!(
            "{}.{}{id}@example.com",
            first.to_ascii_lowercase(),
            last.to_ascii_lowercase()
        ),
        plan: pick(PLANS, s(3)).unwrap_or("free"),
        country: pick(COUNTRIES, s(4)).unwrap_or("US"),
        active: between(0, 9, s(5)) != 0,
        created_at: timestamp(s(6)),
    }
}

pub(super) async fn get_user(
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<User>, ApiError> {
    let id = record_id(path, "user", "user_not_found")?;
    Ok(Json(user(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_deterministic_and_varied() {
        assert_eq!(user(42), user(42));
        assert_ne!(user(42).name, user(43).name);
        let u = user(7);
        assert!(u.email.ends_with("7@example.com"));
        assert!(
            u.email
                .starts_with(&u.name.split(' ').next().unwrap().to_ascii_lowercase())
        );
    }
}
