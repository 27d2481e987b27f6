//! How well scores separate labelled anomalies: ROC AUC and precision/recall at a threshold.

/// ROC AUC of `scores` against `labels` (true = anomaly), ties counted half, as
/// scikit-learn's `roc_auc_score`. `None` when either class is missing.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len().min(labels.len())).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let positives = order.iter().filter(|i| labels[**i]).count();
    let negatives = order.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Mann-Whitney U with average ranks over tied scores.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += rank * order[i..=j].iter().filter(|k| labels[**k]).count() as f64;
        i = j + 1;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

/// Counts at a threshold: a score above it is predicted anomalous.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confusion {
    /// Anomalies flagged.
    pub true_positives: usize,
    /// Normal rows flagged.
    pub false_positives: usize,
    /// Anomalies missed.
    pub false_negatives: usize,
}

impl Confusion {
    /// Counts `scores > threshold` against `labels`.
    pub fn at(scores: &[f64], labels: &[bool], threshold: f64) -> Self {
        let mut c = Self {
            true_positives: 0,
            false_positives: 0,
            false_negatives: 0,
        };
        for (s, l) in scores.iter().zip(labels) {
            match (*s > threshold, *l) {
                (true, true) => c.true_positives += 1,
                (true, false) => c.false_positives += 1,
                (false, true) => c.false_negatives += 1,
                (false, false) => {}
            }
        }
        c
    }

    /// Flagged rows that are anomalies (0 when nothing is flagged).
    pub fn precision(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_positives,
        )
    }

    /// Anomalies that are flagged (0 when there are none).
    pub fn recall(&self) -> f64 {
        ratio(
            self.true_positives,
            self.true_positives + self.false_negatives,
        )
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_scikit_learn() {
        // sklearn.metrics.roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
        assert_eq!(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        // Ties count half: roc_auc_score([0, 1], [0.5, 0.5]) == 0.5
        assert_eq!(roc_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(roc_auc(&[0.2, 0.9], &[true, false]), Some(0.0));
        assert_eq!(roc_auc(&[0.2, 0.9], &[true, true]), None);
    }

    #[test]
    fn precision_and_recall() {
        let c = Confusion::at(&[0.9, 0.8, 0.3, 0.7], &[true, false, true, false], 0.75);
        assert_eq!(c.true_positives, 1);
        assert_eq!(c.false_positives, 1);
        assert_eq!(c.false_negatives, 1);
        assert_eq!(c.precision(), 0.5);
        assert_eq!(c.recall(), 0.5);
    }
}
