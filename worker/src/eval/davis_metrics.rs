//! The DAVIS-2017 semi-supervised scores, as davis2017-evaluation computes them: per object and
//! frame the region similarity J (`db_eval_iou`) and the boundary F-measure F (`f_measure`:
//! `seg2bmap` boundaries, each matched within a disk of radius ⌈0.008 × image diagonal⌉);
//! the first and last frames are not scored; an object's score is its mean over the scored
//! frames (`db_statistics`' M); J-Mean and F-Mean average all objects of all sequences, and
//! J&F-Mean is their average. In the semi-supervised task void pixels (index 255) count as
//! background and are not excluded.

/// `bound_th` of the evaluation code: the boundary tolerance as a fraction of the diagonal.
pub const BOUND_TH: f64 = 0.008;

/// The annotation index of void pixels.
const VOID: u8 = 255;

/// The frames of an `n`-frame sequence that are scored: all but the first (given) and the last.
pub fn scored_frames(n: usize) -> std::ops::Range<usize> {
    1..n.saturating_sub(1).max(1)
}

/// The objects of a sequence: the largest id of its first annotation (void counted as 0), as
/// the evaluation code counts them.
pub fn object_count(first: &[u8]) -> u8 {
    first
        .iter()
        .map(|&v| if v == VOID { 0 } else { v })
        .max()
        .unwrap_or(0)
}

/// Region similarity: |gt ∩ pred| / |gt ∪ pred|, 1 when both are empty.
pub fn jaccard(gt: &[bool], pred: &[bool]) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (&g, &p) in gt.iter().zip(pred) {
        inter += usize::from(g && p);
        union += usize::from(g || p);
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// One-pixel-wide boundaries of a binary mask (`height × width`, row-major), offset half a
/// pixel towards the origin: David Martin's `seg2bmap`, as the evaluation code ports it.
pub fn seg2bmap(seg: &[bool], width: usize, height: usize) -> Vec<bool> {
    let at = |y: usize, x: usize| y < height && x < width && seg[y * width + x];
    let mut b = vec![false; width * height];
    for y in 0..height {
        for x in 0..width {
            let v = at(y, x);
            let (e, s, se) = (at(y, x + 1), at(y + 1, x), at(y + 1, x + 1));
            let mut edge = (v ^ e) | (v ^ s) | (v ^ se);
            // The code overwrites the last row, then the last column, then the corner.
            if y + 1 == height {
                edge = v ^ e;
            }
            if x + 1 == width {
                edge = v ^ s;
            }
            if y + 1 == height && x + 1 == width {
                edge = false;
            }
            b[y * width + x] = edge;
        }
    }
    b
}

/// The tolerance radius in pixels: `bound_th` itself when ≥ 1, else ⌈bound_th × diagonal⌉.
pub fn boundary_radius(width: usize, height: usize, bound_th: f64) -> usize {
    if bound_th >= 1.0 {
        return bound_th as usize;
    }
    let diagonal = ((height * height + width * width) as f64).sqrt();
    (bound_th * diagonal).ceil() as usize
}

/// Membership in a binary map dilated by a disk (skimage's `disk(r)`: offsets with
/// dx² + dy² ≤ r²; OpenCV's `dilate`, which ignores pixels outside the image), answered per
/// pixel from each row's distance to its nearest set pixel.
struct DiskCover {
    width: usize,
    height: usize,
    /// Per pixel, the horizontal distance to the nearest set pixel of its row (`usize::MAX` if
    /// none).
    row_distance: Vec<usize>,
    /// Per |dy| ≤ r, the largest |dx| inside the disk.
    half_widths: Vec<usize>,
}

impl DiskCover {
    fn new(map: &[bool], width: usize, height: usize, radius: usize) -> Self {
        let mut row_distance = vec![usize::MAX; width * height];
        for y in 0..height {
            let row = &map[y * width..(y + 1) * width];
            let out = &mut row_distance[y * width..(y + 1) * width];
            let mut last = None;
            for x in 0..width {
                if row[x] {
                    last = Some(x);
                }
                if let Some(l) = last {
                    out[x] = x - l;
                }
            }
            last = None;
            for x in (0..width).rev() {
                if row[x] {
                    last = Some(x);
                }
                if let Some(l) = last {
                    out[x] = out[x].min(l - x);
                }
            }
        }
        let r2 = radius * radius;
        let half_widths = (0..=radius)
            .map(|dy| {
                // The largest dx with dx² ≤ r² − dy² (an exact integer square root).
                (r2 - dy * dy).isqrt()
            })
            .collect();
        Self {
            width,
            height,
            row_distance,
            half_widths,
        }
    }

    /// Whether (y, x) is set in the dilated map.
    fn covers(&self, y: usize, x: usize) -> bool {
        let radius = self.half_widths.len() - 1;
        let (lo, hi) = (y.saturating_sub(radius), (y + radius).min(self.height - 1));
        (lo..=hi)
            .any(|yy| self.row_distance[yy * self.width + x] <= self.half_widths[yy.abs_diff(y)])
    }
}

/// Boundary F-measure of `pred` against `gt` (binary, `height × width`, row-major):
/// precision = pred boundary pixels within the tolerance disk of a gt boundary pixel, recall
/// the converse, F = 2PR / (P + R) (0 when both are 0). No boundary in either: P = R = 1; only
/// in gt: P = 1, R = 0; only in pred: P = 0, R = 1.
pub fn f_measure(gt: &[bool], pred: &[bool], width: usize, height: usize, bound_th: f64) -> f64 {
    let radius = boundary_radius(width, height, bound_th);
    let pred_boundary = seg2bmap(pred, width, height);
    let gt_boundary = seg2bmap(gt, width, height);
    let n_pred = pred_boundary.iter().filter(|&&b| b).count();
    let n_gt = gt_boundary.iter().filter(|&&b| b).count();
    let (precision, recall) = match (n_pred, n_gt) {
        (0, 0) => (1.0, 1.0),
        (0, _) => (1.0, 0.0),
        (_, 0) => (0.0, 1.0),
        _ => {
            let matched = |boundary: &[bool], other: &[bool]| {
                let cover = DiskCover::new(other, width, height, radius);
                boundary
                    .iter()
                    .enumerate()
                    .filter(|&(i, &b)| b && cover.covers(i / width, i % width))
                    .count()
            };
            let pred_match = matched(&pred_boundary, &gt_boundary);
            let gt_match = matched(&gt_boundary, &pred_boundary);
            (
                pred_match as f64 / n_pred as f64,
                gt_match as f64 / n_gt as f64,
            )
        }
    };
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// An object's scores over a sequence's scored frames (fractions, 0–1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectScore {
    /// Mean region similarity.
    pub j: f64,
    /// Mean boundary F-measure.
    pub f: f64,
}

/// Per-object, per-frame J and F of one sequence, fed one scored frame at a time.
#[derive(Debug, Clone)]
pub struct SequenceScorer {
    width: usize,
    height: usize,
    /// Per object (id − 1), the J of each frame added.
    j: Vec<Vec<f64>>,
    /// Per object, the F of each frame added.
    f: Vec<Vec<f64>>,
}

impl SequenceScorer {
    /// A scorer of `objects` objects (ids 1…objects) on `width × height` frames.
    pub fn new(objects: u8, width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            j: vec![Vec::new(); objects.into()],
            f: vec![Vec::new(); objects.into()],
        }
    }

    /// Scores one frame: `gt` its annotation (void counts as background), `pred` the predicted
    /// object ids, both `height × width`. Ids above the object count belong to no object.
    pub fn add_frame(&mut self, gt: &[u8], pred: &[u8]) {
        let n = self.width * self.height;
        assert!(
            gt.len() == n && pred.len() == n,
            "frame masks must be {}×{}",
            self.width,
            self.height
        );
        for (o, (js, fs)) in self.j.iter_mut().zip(&mut self.f).enumerate() {
            let id = o as u8 + 1;
            let g: Vec<bool> = gt.iter().map(|&v| v == id).collect();
            let p: Vec<bool> = pred.iter().map(|&v| v == id).collect();
            js.push(jaccard(&g, &p));
            fs.push(f_measure(&g, &p, self.width, self.height, BOUND_TH));
        }
    }

    /// Per object, the means over the frames added (NaN when none was).
    pub fn object_scores(&self) -> Vec<ObjectScore> {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        self.j
            .iter()
            .zip(&self.f)
            .map(|(j, f)| ObjectScore {
                j: mean(j),
                f: mean(f),
            })
            .collect()
    }

    /// Per object, J and F of every frame added.
    pub fn per_frame(&self) -> (&[Vec<f64>], &[Vec<f64>]) {
        (&self.j, &self.f)
    }
}

/// The benchmark's summary (fractions, 0–1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// J-Mean: the mean of every object's mean J.
    pub j: f64,
    /// F-Mean.
    pub f: f64,
    /// J&F-Mean: (J-Mean + F-Mean) / 2.
    pub jf: f64,
}

/// Averages the objects of all sequences (NaN when there is none, like `np.mean([])`).
pub fn summarize(objects: &[ObjectScore]) -> Summary {
    let n = objects.len() as f64;
    let j = objects.iter().map(|o| o.j).sum::<f64>() / n;
    let f = objects.iter().map(|o| o.f).sum::<f64>() / n;
    Summary {
        j,
        f,
        jf: (j + f) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rect(width: usize, height: usize, x0: usize, y0: usize, x1: usize, y1: usize) -> Vec<bool> {
        (0..width * height)
            .map(|i| (x0..x1).contains(&(i % width)) && (y0..y1).contains(&(i / width)))
            .collect()
    }

    #[test]
    fn the_radius_is_the_davis_tolerance() {
        // 480p: ⌈0.008 × √(854² + 480²)⌉ = ⌈7.84⌉.
        assert_eq!(boundary_radius(854, 480, BOUND_TH), 8);
        assert_eq!(boundary_radius(20, 10, BOUND_TH), 1);
        assert_eq!(boundary_radius(20, 10, 3.0), 3);
    }

    #[test]
    fn seg2bmap_marks_the_pixels_before_each_edge() {
        // A 2×2 square at (1, 1) in a 4×4 image: boundary pixels are those whose right, lower
        // or lower-right neighbour differs.
        let b = seg2bmap(&rect(4, 4, 1, 1, 3, 3), 4, 4);
        let want = [
            "1110", //
            "1010", //
            "1110", //
            "0000",
        ];
        let got: Vec<String> = b
            .chunks(4)
            .map(|r| r.iter().map(|&v| if v { '1' } else { '0' }).collect())
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn identical_masks_score_one_and_disjoint_ones_zero() {
        let a = rect(40, 30, 5, 5, 20, 15);
        assert_eq!(jaccard(&a, &a), 1.0);
        assert_eq!(f_measure(&a, &a, 40, 30, BOUND_TH), 1.0);
        let b = rect(40, 30, 25, 18, 38, 28);
        assert_eq!(jaccard(&a, &b), 0.0);
        assert_eq!(f_measure(&a, &b, 40, 30, BOUND_TH), 0.0);
        let empty = vec![false; 40 * 30];
        assert_eq!(jaccard(&empty, &empty), 1.0);
        assert_eq!(f_measure(&empty, &empty, 40, 30, BOUND_TH), 1.0);
        // Missing object: P = 1, R = 0 → F = 0; J = 0.
        assert_eq!(f_measure(&a, &empty, 40, 30, BOUND_TH), 0.0);
        assert_eq!(jaccard(&a, &empty), 0.0);
    }

    #[test]
    fn a_boundary_shifted_within_the_tolerance_still_matches() {
        // Radius 1 at this size: a one-pixel shift matches fully, a three-pixel one does not.
        let a = rect(40, 30, 5, 5, 20, 15);
        assert_eq!(
            f_measure(&a, &rect(40, 30, 6, 5, 21, 15), 40, 30, BOUND_TH),
            1.0
        );
        assert!(f_measure(&a, &rect(40, 30, 8, 5, 23, 15), 40, 30, BOUND_TH) < 0.7);
    }

    #[test]
    fn the_summary_averages_objects_then_j_and_f() {
        let mut scorer = SequenceScorer::new(2, 4, 1);
        scorer.add_frame(&[1, 1, 2, 255], &[1, 0, 2, 2]);
        scorer.add_frame(&[1, 1, 0, 0], &[1, 1, 0, 0]);
        let objects = scorer.object_scores();
        assert_eq!(objects[0].j, (0.5 + 1.0) / 2.0);
        // Object 2 is absent from the second frame in both masks: J = 1 there.
        assert_eq!(objects[1].j, (0.5 + 1.0) / 2.0);
        let s = summarize(&objects);
        assert_eq!(s.jf, (s.j + s.f) / 2.0);
        assert_eq!(object_count(&[0, 3, 255, 1]), 3);
        assert_eq!(scored_frames(5), 1..4);
    }
}
