//! Fusing the text and vector channels' rankings into one, then weighing by importance and age.

use std::collections::HashMap;

use crate::types::{ChannelHit, Decay, Fusion, FusionMethod};

/// One channel's best documents, best first, with its raw score (BM25: higher is better;
/// vector distance: lower is better).
pub struct Ranking {
    pub docs: Vec<(u64, f32)>,
    pub higher_is_better: bool,
}

/// A document's place after fusion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fused {
    pub doc: u64,
    pub score: f32,
    pub text: Option<ChannelHit>,
    pub vector: Option<ChannelHit>,
}

/// Fuses the rankings (each cut to the fusion window) into one, best first; ties go to the lower
/// document number, so equal inputs give equal outputs.
pub fn fuse(fusion: &Fusion, text: Option<&Ranking>, vector: Option<&Ranking>) -> Vec<Fused> {
    let mut by_doc: HashMap<u64, Fused> = HashMap::new();
    let channels = [(text, fusion.weights.text, true), (vector, fusion.weights.vector, false)];
    for (ranking, weight, is_text) in channels {
        let Some(r) = ranking else { continue };
        let docs = &r.docs[..r.docs.len().min(fusion.window)];
        let (lo, hi) = docs.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), d| (lo.min(d.1), hi.max(d.1)));
        for (i, &(doc, raw)) in docs.iter().enumerate() {
            let rank = i + 1;
            let contribution = match fusion.method {
                FusionMethod::Rrf => weight / (fusion.k + rank as f32),
                FusionMethod::Linear => {
                    // Min-max within the window; a window of equal scores counts fully.
                    let norm = if hi > lo { (raw - lo) / (hi - lo) } else { 1.0 };
                    weight * if r.higher_is_better { norm } else { 1.0 - norm }
                }
            };
            let e = by_doc.entry(doc).or_insert(Fused { doc, score: 0.0, text: None, vector: None });
            e.score += contribution;
            let hit = Some(ChannelHit { rank, score: raw });
            if is_text {
                e.text = hit;
            } else {
                e.vector = hit;
            }
        }
    }
    let mut out: Vec<Fused> = by_doc.into_values().collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
    out
}

/// The age multiplier: `0.5^(age / halfLife)`, never below the floor; 1 without decay.
pub fn decay_factor(decay: Option<&Decay>, age_ms: u64) -> f32 {
    let Some(d) = decay else { return 1.0 };
    let f = 0.5f64.powf(age_ms as f64 / 1000.0 / d.half_life_secs) as f32;
    f.max(d.floor)
}

/// The importance multiplier: `1 + weight × importance`.
pub fn importance_factor(weight: f32, importance: f32) -> f32 {
    1.0 + weight * importance
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ChannelWeights;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-7
    }

    #[test]
    fn rrf_matches_hand_computed_scores() {
        // Text: 10, 20, 30. Vector: 20, 40, 10. k = 60, ranks from 1.
        let text = Ranking { docs: vec![(10, 9.0), (20, 5.0), (30, 1.0)], higher_is_better: true };
        let vector = Ranking { docs: vec![(20, 0.1), (40, 0.2), (10, 0.3)], higher_is_better: false };
        let out = fuse(&Fusion::default(), Some(&text), Some(&vector));
        let score = |d: u64| out.iter().find(|f| f.doc == d).unwrap().score;
        // 20: 1/62 + 1/61; 10: 1/61 + 1/63; 40: 1/62; 30: 1/63.
        assert!(close(score(20), 1.0 / 62.0 + 1.0 / 61.0));
        assert!(close(score(10), 1.0 / 61.0 + 1.0 / 63.0));
        assert!(close(score(40), 1.0 / 62.0));
        assert!(close(score(30), 1.0 / 63.0));
        assert_eq!(out.iter().map(|f| f.doc).collect::<Vec<_>>(), vec![20, 10, 40, 30]);
        let top = out[0];
        assert_eq!(top.text, Some(ChannelHit { rank: 2, score: 5.0 }));
        assert_eq!(top.vector, Some(ChannelHit { rank: 1, score: 0.1 }));
    }

    #[test]
    fn weights_window_and_k_change_the_sum() {
        let text = Ranking { docs: vec![(1, 3.0), (2, 2.0), (3, 1.0)], higher_is_better: true };
        let vector = Ranking { docs: vec![(3, 0.0), (2, 0.5)], higher_is_better: false };
        let f = Fusion { k: 2.0, weights: ChannelWeights { text: 0.5, vector: 2.0 }, window: 2, ..Fusion::default() };
        let out = fuse(&f, Some(&text), Some(&vector));
        let score = |d: u64| out.iter().find(|x| x.doc == d).map(|x| x.score);
        // Window 2: text doc 3 is out. 3: 2/(2+1); 2: 0.5/(2+2) + 2/(2+2); 1: 0.5/(2+1).
        assert!(close(score(3).unwrap(), 2.0 / 3.0));
        assert!(close(score(2).unwrap(), 0.5 / 4.0 + 2.0 / 4.0));
        assert!(close(score(1).unwrap(), 0.5 / 3.0));
        assert_eq!(out[0].text, None, "doc 3 fell out of the text window");
    }

    #[test]
    fn linear_normalises_each_channel() {
        let text = Ranking { docs: vec![(1, 10.0), (2, 6.0), (3, 2.0)], higher_is_better: true };
        let vector = Ranking { docs: vec![(3, 0.2), (1, 0.6)], higher_is_better: false };
        let f = Fusion { method: FusionMethod::Linear, ..Fusion::default() };
        let out = fuse(&f, Some(&text), Some(&vector));
        let score = |d: u64| out.iter().find(|x| x.doc == d).unwrap().score;
        // Text: 1 → 1, 2 → 0.5, 3 → 0. Vector: 3 → 1, 1 → 0.
        assert!(close(score(1), 1.0));
        assert!(close(score(2), 0.5));
        assert!(close(score(3), 1.0));
        assert_eq!(out.iter().map(|x| x.doc).collect::<Vec<_>>(), vec![1, 3, 2], "ties by document");
    }

    #[test]
    fn one_channel_alone_keeps_its_order() {
        let vector = Ranking { docs: vec![(5, 0.1), (4, 0.2), (6, 0.3)], higher_is_better: false };
        let out = fuse(&Fusion::default(), None, Some(&vector));
        assert_eq!(out.iter().map(|x| x.doc).collect::<Vec<_>>(), vec![5, 4, 6]);
    }

    #[test]
    fn decay_halves_per_half_life_down_to_the_floor() {
        let d = Decay { half_life_secs: 10.0, floor: 0.2 };
        assert!(close(decay_factor(Some(&d), 0), 1.0));
        assert!(close(decay_factor(Some(&d), 10_000), 0.5));
        assert!(close(decay_factor(Some(&d), 20_000), 0.25));
        assert!(close(decay_factor(Some(&d), 1_000_000), 0.2));
        assert!(close(decay_factor(None, 1_000_000), 1.0));
        assert!(close(importance_factor(0.5, 0.8), 1.4));
    }
}
