//! What a key normally does, and the low-and-slow signals measured against it: object IDs per
//! route template (distinct count, spread, sequential enumeration, coverage growth), parameter
//! value diversity, client IP and user-agent diversity. Day-based sketches rotate at UTC
//! midnight and are read over the current and the previous day.

use super::sketch::{CappedMap, Decayed, Hll, MAX_PLAUSIBLE_MS};

/// Route templates tracked per key.
const MAX_ROUTES: usize = 16;
/// Query parameter names tracked per key.
const MAX_PARAMS: usize = 16;
const DAY_MS: i64 = 86_400_000;
/// Time constant of the route and parameter weights used for eviction.
const WEIGHT_TAU_MS: f64 = DAY_MS as f64;

/// A path with its numeric segments replaced by `{id}`, and those IDs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// For example `/api/users/{id}/orders`.
    pub template: String,
    /// The numeric segments, in order.
    pub ids: Vec<u64>,
}

impl Route {
    /// Splits `path` (query string already removed) into template and IDs. A segment counts as
    /// an ID when it is all ASCII digits and fits a `u64`.
    pub fn parse(path: &str) -> Self {
        let mut template = String::with_capacity(path.len());
        let mut ids = Vec::new();
        for (i, seg) in path.split('/').enumerate() {
            if i > 0 {
                template.push('/');
            }
            match seg.parse::<u64>() {
                Ok(id) if seg.bytes().all(|b| b.is_ascii_digit()) => {
                    ids.push(id);
                    template.push_str("{id}");
                }
                _ => template.push_str(seg),
            }
        }
        Self { template, ids }
    }
}

/// Day-rotating pair of distinct-count sketches.
#[derive(Debug, Clone, Default, bincode::Encode, bincode::Decode)]
struct DaySketch<const P: u32> {
    day: i64,
    today: Hll<P>,
    yesterday: Hll<P>,
}

impl<const P: u32> DaySketch<P> {
    fn rotate(&mut self, now_ms: i64) {
        let day = now_ms.div_euclid(DAY_MS);
        if day > self.day {
            self.yesterday = if day == self.day + 1 {
                std::mem::take(&mut self.today)
            } else {
                Hll::default()
            };
            self.today = Hll::default();
            self.day = day;
        }
    }

    fn insert(&mut self, now_ms: i64, item: &[u8]) {
        self.rotate(now_ms);
        self.today.insert(item);
    }

    fn is_plausible(&self) -> bool {
        self.day.unsigned_abs() <= (MAX_PLAUSIBLE_MS / DAY_MS) as u64
    }

    /// Distinct items over today and yesterday.
    fn count(&self) -> f64 {
        self.today.union(&self.yesterday).count()
    }

    /// Share of today's distinct items not seen yesterday, in `[0, 1]`.
    fn novelty(&self) -> f64 {
        let today = self.today.count();
        if today < 1.0 {
            return 0.0;
        }
        let new = self.today.union(&self.yesterday).count() - self.yesterday.count();
        (new / today).clamp(0.0, 1.0)
    }
}

/// Object IDs seen under one route template.
#[derive(Debug, Clone, Default, bincode::Encode, bincode::Decode)]
struct IdStats {
    weight: Decayed,
    distinct: DaySketch<8>,
    min: u64,
    max: u64,
    last: Option<u64>,
    /// Decayed counts (24 h) of consecutive pairs and of those one ID apart: the recent
    /// share, so a key that starts enumerating shows it within the day.
    steps: Decayed,
    sequential: Decayed,
}

impl IdStats {
    fn observe(&mut self, now_ms: i64, id: u64) {
        self.weight.add(now_ms, WEIGHT_TAU_MS, 1.0);
        self.distinct.insert(now_ms, &id.to_le_bytes());
        if self.last.is_none() {
            self.min = id;
            self.max = id;
        }
        self.min = self.min.min(id);
        self.max = self.max.max(id);
        if let Some(last) = self.last {
            self.steps.add(now_ms, WEIGHT_TAU_MS, 1.0);
            if id.abs_diff(last) == 1 {
                self.sequential.add(now_ms, WEIGHT_TAU_MS, 1.0);
            }
        }
        self.last = Some(id);
    }

    fn is_plausible(&self) -> bool {
        self.weight.is_plausible()
            && self.distinct.is_plausible()
            && self.min <= self.max
            && self.steps.is_plausible()
            && self.sequential.is_plausible()
    }

    fn spread(&self) -> f64 {
        (self.max - self.min) as f64
    }

    /// Distinct IDs over the ID range they span, in `(0, 1]`.
    fn coverage(&self) -> f64 {
        (self.distinct.count() / (self.spread() + 1.0)).clamp(0.0, 1.0)
    }

    fn sequential_ratio(&self, now_ms: i64) -> f64 {
        let steps = self.steps.get(now_ms, WEIGHT_TAU_MS);
        if steps < 1e-9 {
            0.0
        } else {
            (self.sequential.get(now_ms, WEIGHT_TAU_MS) / steps).clamp(0.0, 1.0)
        }
    }
}

/// The key's object-ID, parameter and client diversity state.
#[derive(Debug, Clone, bincode::Encode, bincode::Decode)]
pub struct Profile {
    routes: CappedMap<IdStats>,
    params: CappedMap<(Decayed, DaySketch<6>)>,
    ips: DaySketch<8>,
    agents: DaySketch<8>,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            routes: CappedMap::new(MAX_ROUTES),
            params: CappedMap::new(MAX_PARAMS),
            ips: DaySketch::default(),
            agents: DaySketch::default(),
        }
    }
}

/// The profile's features; see [`super::features::FEATURE_NAMES`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProfileFeatures {
    /// Distinct client IPs, today and yesterday.
    pub distinct_ips: f64,
    /// Distinct user agents, today and yesterday.
    pub distinct_user_agents: f64,
    /// Most distinct values of any one query parameter (numeric ones count as IDs too).
    pub param_distinct_max: f64,
    /// Most distinct object IDs under any one route template.
    pub ids_distinct_max: f64,
    /// Spread (max - min) of the IDs of that route.
    pub id_spread: f64,
    /// Its share of consecutive requests whose IDs differ by exactly 1.
    pub id_sequential_ratio: f64,
    /// Its distinct IDs over the range they span.
    pub id_coverage: f64,
    /// Share of today's distinct IDs on that route not seen yesterday.
    pub id_novelty: f64,
    /// Its distinct IDs times its sequential share: about how many objects were reached by
    /// walking the ID space one by one. Paging through a list reaches a few dozen; an
    /// enumeration reaches everything it reads.
    pub id_enumeration: f64,
}

impl Profile {
    /// Records one request.
    pub fn observe(
        &mut self,
        now_ms: i64,
        route: &Route,
        query: &[(&str, &str)],
        ip: &str,
        user_agent: &str,
    ) {
        self.ips.insert(now_ms, ip.as_bytes());
        self.agents.insert(now_ms, user_agent.as_bytes());
        let weight = |s: &IdStats| s.weight.get(now_ms, WEIGHT_TAU_MS);
        for (i, id) in route.ids.iter().enumerate() {
            let key = format!("{}#{i}", route.template);
            self.routes
                .entry(&key, IdStats::default, weight)
                .observe(now_ms, *id);
        }
        for (name, value) in query {
            let p = self.params.entry(
                name,
                Default::default,
                |(w, _): &(Decayed, DaySketch<6>)| w.get(now_ms, WEIGHT_TAU_MS),
            );
            p.0.add(now_ms, WEIGHT_TAU_MS, 1.0);
            p.1.insert(now_ms, value.as_bytes());
            if let Ok(id) = value.parse::<u64>() {
                let key = format!("?{name}");
                self.routes
                    .entry(&key, IdStats::default, weight)
                    .observe(now_ms, id);
            }
        }
    }

    /// Restored state: caps and clock values as this code writes them.
    pub fn is_plausible(&self) -> bool {
        self.routes.is_plausible(MAX_ROUTES, IdStats::is_plausible)
            && self
                .params
                .is_plausible(MAX_PARAMS, |(w, s)| w.is_plausible() && s.is_plausible())
            && self.ips.is_plausible()
            && self.agents.is_plausible()
    }

    /// The features at `now_ms`.
    pub fn features(&mut self, now_ms: i64) -> ProfileFeatures {
        self.ips.rotate(now_ms);
        self.agents.rotate(now_ms);
        let widest = self
            .routes
            .iter()
            .map(|(_, s)| (s.distinct.count(), s))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let mut f = ProfileFeatures {
            distinct_ips: self.ips.count(),
            distinct_user_agents: self.agents.count(),
            param_distinct_max: self
                .params
                .iter()
                .map(|(_, p)| p.1.count())
                .fold(0.0, f64::max),
            ..ProfileFeatures::default()
        };
        if let Some((distinct, s)) = widest {
            f.ids_distinct_max = distinct;
            f.id_spread = s.spread();
            f.id_sequential_ratio = s.sequential_ratio(now_ms);
            f.id_coverage = s.coverage();
            f.id_novelty = s.distinct.novelty();
            f.id_enumeration = distinct * f.id_sequential_ratio;
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates_replace_numeric_segments() {
        let r = Route::parse("/api/users/42/orders/7");
        assert_eq!(r.template, "/api/users/{id}/orders/{id}");
        assert_eq!(r.ids, [42, 7]);
        let r = Route::parse("/api/v2/users/me");
        assert_eq!(r.template, "/api/v2/users/me");
        assert!(r.ids.is_empty());
        assert_eq!(Route::parse("/api/+5").ids, Vec::<u64>::new());
    }

    fn visit(p: &mut Profile, t: i64, path: &str) {
        p.observe(t, &Route::parse(path), &[], "10.0.0.1", "curl/8");
    }

    #[test]
    fn enumeration_is_sequential_and_covers_its_range() {
        let mut scraper = Profile::default();
        for i in 0..500 {
            visit(
                &mut scraper,
                i * 60_000,
                &format!("/api/users/{}", 1000 + i),
            );
        }
        let f = scraper.features(500 * 60_000);
        assert!(f.id_sequential_ratio > 0.99, "{f:?}");
        assert!(f.id_coverage > 0.7, "{f:?}");
        assert!(f.id_enumeration > 0.9 * f.ids_distinct_max, "{f:?}");
        assert_eq!(f.id_spread, 499.0);
        assert!((f.ids_distinct_max - 500.0).abs() < 100.0, "{f:?}");

        let mut user = Profile::default();
        for i in 0..500 {
            // The same handful of objects, revisited.
            visit(
                &mut user,
                i * 60_000,
                &format!("/api/users/{}", [17, 4242, 90_000][i as usize % 3]),
            );
        }
        let f = user.features(500 * 60_000);
        assert_eq!(f.id_sequential_ratio, 0.0);
        assert_eq!(f.id_enumeration, 0.0);
        assert!(f.id_coverage < 0.01, "{f:?}");
        assert!(f.ids_distinct_max < 4.0, "{f:?}");
    }

    #[test]
    fn paging_is_sequential_but_enumerates_little() {
        let mut p = Profile::default();
        // Forty sessions paging through the same 20 pages of a list.
        for session in 0..40 {
            for page in 1..=20 {
                let t = session * 3_600_000 + page * 1_000;
                let page = page.to_string();
                p.observe(
                    t,
                    &Route::parse("/api/items"),
                    &[("page", &page)],
                    "ip",
                    "ua",
                );
            }
        }
        let f = p.features(40 * 3_600_000);
        assert!(f.id_sequential_ratio > 0.9, "{f:?}");
        assert!(f.id_enumeration < 25.0, "{f:?}");
    }

    #[test]
    fn the_sequential_share_is_recent() {
        let mut p = Profile::default();
        // A day of revisits, then a day of enumeration: the share follows the second day.
        for i in 0..500 {
            visit(
                &mut p,
                i * 60_000,
                &format!("/api/users/{}", [17, 4242, 90_000][i as usize % 3]),
            );
        }
        for i in 0..500 {
            visit(
                &mut p,
                DAY_MS + i * 60_000,
                &format!("/api/users/{}", 1_000 + i),
            );
        }
        let f = p.features(DAY_MS + 500 * 60_000);
        assert!(f.id_sequential_ratio > 0.6, "{f:?}");
    }

    #[test]
    fn novelty_tells_new_objects_from_revisits() {
        let day = DAY_MS;
        let mut scraper = Profile::default();
        let mut user = Profile::default();
        for i in 0..200 {
            visit(&mut scraper, i * 1000, &format!("/api/items/{i}"));
            visit(&mut user, i * 1000, &format!("/api/items/{}", i % 50));
        }
        for i in 0..200 {
            visit(
                &mut scraper,
                day + i * 1000,
                &format!("/api/items/{}", 200 + i),
            );
            visit(&mut user, day + i * 1000, &format!("/api/items/{}", i % 50));
        }
        assert!(scraper.features(day + 300_000).id_novelty > 0.8);
        assert!(user.features(day + 300_000).id_novelty < 0.2);
    }

    #[test]
    fn ip_agent_and_parameter_diversity() {
        let mut p = Profile::default();
        for i in 0..40 {
            let (page, word) = ((i % 5).to_string(), format!("w{i}"));
            p.observe(
                i,
                &Route::parse("/api/search"),
                &[("page", &page), ("q", &word)],
                &format!("10.0.0.{i}"),
                "ua",
            );
        }
        let f = p.features(40);
        assert!((f.distinct_ips - 40.0).abs() < 4.0, "{f:?}");
        assert!((f.distinct_user_agents - 1.0).abs() < 0.5, "{f:?}");
        assert!((f.param_distinct_max - 40.0).abs() < 4.0, "{f:?}");
        // `page` is numeric: tracked as IDs.
        assert!((f.ids_distinct_max - 5.0).abs() < 1.0, "{f:?}");
    }

    #[test]
    fn routes_are_bounded() {
        let mut p = Profile::default();
        for i in 0..1000 {
            visit(&mut p, i, &format!("/api/r{i}/1"));
        }
        assert_eq!(p.routes.len(), MAX_ROUTES);
    }
}
