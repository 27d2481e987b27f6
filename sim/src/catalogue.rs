//! The API the populations call: about twenty endpoints with path templates, object-ID spaces
//! and list parameters, shaped like a typical commerce API (and a superset of the demo
//! backend's routes).

use crate::dist::{self, SimRng};

/// Object kinds with their own ID space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `/api/users/{id}`
    User,
    /// `/api/products/{id}`
    Product,
    /// `/api/orders/{id}`
    Order,
    /// `/api/invoices/{id}`
    Invoice,
    /// `/api/inventory/{id}`
    Inventory,
    /// `/api/carts/{id}`
    Cart,
    /// `/api/shipments/{id}`
    Shipment,
}

impl Resource {
    /// Every kind, in a fixed order.
    pub const ALL: [Resource; 7] = [
        Resource::User,
        Resource::Product,
        Resource::Order,
        Resource::Invoice,
        Resource::Inventory,
        Resource::Cart,
        Resource::Shipment,
    ];

    /// Largest ID in use.
    pub fn id_space(self) -> u64 {
        match self {
            Resource::User => 500_000,
            Resource::Product => 50_000,
            Resource::Order => 5_000_000,
            Resource::Invoice => 2_000_000,
            Resource::Inventory => 50_000,
            Resource::Cart => 1_000_000,
            Resource::Shipment => 3_000_000,
        }
    }

    /// Index in [`Resource::ALL`].
    pub fn index(self) -> usize {
        Resource::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// What varies in an endpoint's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A fixed path.
    Fixed,
    /// `{id}` of a resource in the path.
    Object(Resource),
    /// A paginated list (`page`, `page_size`).
    List,
    /// Free-text search (`q`).
    Search,
    /// A category filter.
    Category,
    /// A date parameter.
    Date,
}

/// One endpoint of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// HTTP method.
    pub method: &'static str,
    /// Path; `{id}` is replaced for [`Shape::Object`].
    pub template: &'static str,
    /// What varies.
    pub shape: Shape,
}

const fn ep(method: &'static str, template: &'static str, shape: Shape) -> Endpoint {
    Endpoint {
        method,
        template,
        shape,
    }
}

/// The catalogue.
pub const ENDPOINTS: [Endpoint; 21] = [
    ep("GET", "/api/whoami", Shape::Fixed),
    ep("GET", "/api/health", Shape::Fixed),
    ep("GET", "/api/users/{id}", Shape::Object(Resource::User)),
    ep(
        "GET",
        "/api/users/{id}/settings",
        Shape::Object(Resource::User),
    ),
    ep("PATCH", "/api/users/{id}", Shape::Object(Resource::User)),
    ep(
        "GET",
        "/api/products/{id}",
        Shape::Object(Resource::Product),
    ),
    ep("GET", "/api/products", Shape::List),
    ep("GET", "/api/products", Shape::Category),
    ep("GET", "/api/orders", Shape::List),
    ep("GET", "/api/orders/{id}", Shape::Object(Resource::Order)),
    ep("POST", "/api/orders", Shape::Fixed),
    ep(
        "GET",
        "/api/orders/{id}/items",
        Shape::Object(Resource::Order),
    ),
    ep(
        "GET",
        "/api/invoices/{id}",
        Shape::Object(Resource::Invoice),
    ),
    ep("GET", "/api/invoices", Shape::List),
    ep("GET", "/api/search", Shape::Search),
    ep(
        "GET",
        "/api/inventory/{id}",
        Shape::Object(Resource::Inventory),
    ),
    ep(
        "POST",
        "/api/carts/{id}/items",
        Shape::Object(Resource::Cart),
    ),
    ep(
        "GET",
        "/api/shipments/{id}",
        Shape::Object(Resource::Shipment),
    ),
    ep("GET", "/api/reports/daily", Shape::Date),
    ep("POST", "/api/webhooks/ack", Shape::Fixed),
    ep("GET", "/api/catalog/categories", Shape::Fixed),
];

const WORDS: [&str; 24] = [
    "shoes", "red", "laptop", "cable", "usb-c", "desk", "chair", "coffee", "mug", "phone", "case",
    "charger", "monitor", "lamp", "bag", "jacket", "socks", "book", "pen", "paper", "tea",
    "bottle", "watch", "camera",
];
const CATEGORIES: [&str; 8] = [
    "apparel",
    "electronics",
    "home",
    "office",
    "outdoor",
    "toys",
    "grocery",
    "books",
];

/// A concrete request for `endpoint`: path and query. `id` fills `{id}`, `page` the list page.
pub fn render(
    endpoint: &Endpoint,
    id: u64,
    page: u32,
    day: i64,
    rng: &mut SimRng,
) -> (String, Vec<(String, String)>) {
    let path = endpoint.template.replace("{id}", &id.to_string());
    let query = match endpoint.shape {
        Shape::Fixed | Shape::Object(_) => Vec::new(),
        Shape::List => vec![
            ("page".to_owned(), page.to_string()),
            ("page_size".to_owned(), "50".to_owned()),
        ],
        Shape::Search => {
            let n = dist::range(rng, 1, 3) as usize;
            let words: Vec<&str> = (0..n)
                .map(|_| WORDS[dist::range(rng, 0, WORDS.len() as u64) as usize])
                .collect();
            vec![("q".to_owned(), words.join(" "))]
        }
        Shape::Category => vec![(
            "category".to_owned(),
            CATEGORIES[dist::range(rng, 0, CATEGORIES.len() as u64) as usize].to_owned(),
        )],
        Shape::Date => vec![("date".to_owned(), date(day))],
    };
    (path, query)
}

/// `YYYY-MM-DD` of a day number since the Unix epoch (civil calendar).
pub fn date(days: i64) -> String {
    // Howard Hinnant's days_from_civil, inverted.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(19_723), "2024-01-01");
        assert_eq!(date(19_782), "2024-02-29");
    }

    #[test]
    fn objects_fill_the_template() {
        let mut rng = dist::rng_for(1, 1);
        let (p, q) = render(&ENDPOINTS[11], 42, 1, 0, &mut rng);
        assert_eq!(p, "/api/orders/42/items");
        assert!(q.is_empty());
        let (p, q) = render(&ENDPOINTS[8], 0, 3, 0, &mut rng);
        assert_eq!(p, "/api/orders");
        assert_eq!(q[0], ("page".to_owned(), "3".to_owned()));
    }
}
