//! Simulcast layers and how publishers' rids map onto them.

use str0m::media::Rid;

/// A simulcast layer, ordered from smallest to largest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// About 180p (rid `q` or `l`).
    Low,
    /// About 360p (rid `h` in `q/h/f`, `m` in `l/m/h`).
    Mid,
    /// About 720p (rid `f` or `h` in `l/m/h`).
    High,
}

impl Layer {
    /// All layers, smallest first.
    pub const ALL: [Layer; 3] = [Layer::Low, Layer::Mid, Layer::High];

    /// Index 0..3 (smallest first), for per-layer arrays.
    pub const fn index(self) -> usize {
        match self {
            Layer::Low => 0,
            Layer::Mid => 1,
            Layer::High => 2,
        }
    }

    /// The layer's name in the signalling protocol (`q`, `h`, `f`).
    pub const fn signal_name(self) -> &'static str {
        match self {
            Layer::Low => "q",
            Layer::Mid => "h",
            Layer::High => "f",
        }
    }

    /// The frame height this layer usually has.
    pub const fn nominal_height(self) -> u32 {
        match self {
            Layer::Low => 180,
            Layer::Mid => 360,
            Layer::High => 720,
        }
    }

    /// The largest layer a subscriber that wants at most `height` pixels should get (`None`:
    /// paused). Any non-zero height allows at least [`Layer::Low`].
    pub const fn cap_for_height(height: u32) -> Option<Layer> {
        if height == 0 {
            None
        } else if height >= Layer::High.nominal_height() {
            Some(Layer::High)
        } else if height >= Layer::Mid.nominal_height() {
            Some(Layer::Mid)
        } else {
            Some(Layer::Low)
        }
    }
}

/// The layer of `rid` among the rids a publisher announced (`a=simulcast:send …`).
///
/// `q/h/f` (quarter, half, full) and `l/m/h` (low, mid, high) are recognised by name; `h`
/// is Mid in the first scheme and High in the second, so the scheme is told by the other
/// rids. Other names are ranked by their position in `rids` (first = smallest, which is how
/// browsers list `sendEncodings` scaled down by 4, 2, 1).
pub fn layer_for_rid(rids: &[Rid], rid: &str) -> Option<Layer> {
    let has = |name: &str| rids.iter().any(|r| &**r == name);
    let qhf = has("q") || has("f");
    let lmh = !qhf && (has("l") || has("m"));
    match rid {
        "q" | "l" if qhf || lmh => return Some(Layer::Low),
        "m" if lmh => return Some(Layer::Mid),
        "h" if qhf => return Some(Layer::Mid),
        "h" if lmh => return Some(Layer::High),
        "f" if qhf => return Some(Layer::High),
        _ => {}
    }
    let position = rids.iter().position(|r| &**r == rid)?;
    Some(match (rids.len(), position) {
        (1, _) => Layer::High,
        (2, 0) => Layer::Low,
        (2, _) => Layer::High,
        (_, 0) => Layer::Low,
        (_, 1) => Layer::Mid,
        _ => Layer::High,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rids(names: &[&str]) -> Vec<Rid> {
        names.iter().map(|n| Rid::from(*n)).collect()
    }

    #[test]
    fn qhf_scheme() {
        let r = rids(&["q", "h", "f"]);
        assert_eq!(layer_for_rid(&r, "q"), Some(Layer::Low));
        assert_eq!(layer_for_rid(&r, "h"), Some(Layer::Mid));
        assert_eq!(layer_for_rid(&r, "f"), Some(Layer::High));
        assert_eq!(layer_for_rid(&r, "x"), None);
    }

    #[test]
    fn lmh_scheme_h_is_high() {
        let r = rids(&["l", "m", "h"]);
        assert_eq!(layer_for_rid(&r, "l"), Some(Layer::Low));
        assert_eq!(layer_for_rid(&r, "m"), Some(Layer::Mid));
        assert_eq!(layer_for_rid(&r, "h"), Some(Layer::High));
    }

    #[test]
    fn unknown_names_rank_by_position() {
        let r = rids(&["a", "b", "c"]);
        assert_eq!(layer_for_rid(&r, "a"), Some(Layer::Low));
        assert_eq!(layer_for_rid(&r, "b"), Some(Layer::Mid));
        assert_eq!(layer_for_rid(&r, "c"), Some(Layer::High));
        let two = rids(&["lo", "hi"]);
        assert_eq!(layer_for_rid(&two, "hi"), Some(Layer::High));
    }

    #[test]
    fn height_caps() {
        assert_eq!(Layer::cap_for_height(0), None);
        assert_eq!(Layer::cap_for_height(90), Some(Layer::Low));
        assert_eq!(Layer::cap_for_height(360), Some(Layer::Mid));
        assert_eq!(Layer::cap_for_height(540), Some(Layer::Mid));
        assert_eq!(Layer::cap_for_height(1080), Some(Layer::High));
    }
}
