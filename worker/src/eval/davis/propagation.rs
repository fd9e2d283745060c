//! Label propagation through frame-to-frame feature affinities, as videowalk's `test.py`
//! computes it (`context_index_bank`, `MaskedAttention`, `mem_efficient_batched_affinity` and
//! the propagation loop): each location of a new frame takes the softmax-weighted (temperature)
//! sum of the soft labels of its top-k most similar locations among the first frame and the
//! `context` previous frames, the previous frames restricted to a spatial radius; the result is
//! kept, soft, as context for later frames.
use std::collections::VecDeque;

use tch::{Device, Kind, Tensor};

/// Affinity entries computed at once (query locations × context locations), bounding memory
/// whatever the resolution (128 MiB of f32).
const AFFINITY_BUDGET: i64 = 1 << 25;

/// What videowalk adds to the affinity of a location outside the radius (before the
/// temperature), so that it is never among the top k while any location inside is.
const OUTSIDE_RADIUS: f64 = -1e10;

/// The protocol's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PropagationParams {
    /// Neighbours whose labels are summed per location.
    pub top_k: i64,
    /// Softmax temperature of the affinities.
    pub temperature: f64,
    /// Previous frames in the context (besides the first frame).
    pub context: usize,
    /// Spatial radius, in feature cells, within which previous frames' locations count
    /// (strictly closer than this; the first frame is not restricted).
    pub radius: f64,
}

/// A frame in the context: its features and its (soft) labels.
struct ContextFrame {
    index: usize,
    /// `hw × C`, L2-normalised rows.
    features: Tensor,
    /// `hw × L`.
    labels: Tensor,
}

/// The propagation state of one sequence.
pub struct Propagator {
    params: PropagationParams,
    height: i64,
    width: i64,
    first: ContextFrame,
    recent: VecDeque<ContextFrame>,
    next: usize,
}

/// `C × h × w` features → `hw × C`.
fn locations(features: &Tensor) -> Tensor {
    let c = features.size()[0];
    features.view([c, -1]).transpose(0, 1).contiguous()
}

impl Propagator {
    /// Starts a sequence from its first frame: `features` (`C × h × w`, L2-normalised per
    /// location) and `labels` (`L × h × w`, the given annotation as soft labels on the same
    /// grid). Before any frame is predicted the context is the first frame repeated (videowalk
    /// pads every video with `context` copies of its first frame).
    pub fn new(params: PropagationParams, features: &Tensor, labels: &Tensor) -> Self {
        let size = features.size();
        let (height, width) = (size[1], size[2]);
        let first = ContextFrame {
            index: 0,
            features: locations(features),
            labels: locations(labels),
        };
        let recent = (0..params.context)
            .map(|_| ContextFrame {
                index: 0,
                features: first.features.shallow_clone(),
                labels: first.labels.shallow_clone(),
            })
            .collect();
        Self {
            params,
            height,
            width,
            first,
            recent,
            next: 1,
        }
    }

    /// The frames the next prediction reads, in videowalk's key order (first frame, then the
    /// previous frames oldest first).
    pub fn context_frames(&self) -> Vec<usize> {
        std::iter::once(self.first.index)
            .chain(self.recent.iter().map(|f| f.index))
            .collect()
    }

    /// 0 where key location `k` is within the radius of query location `q`, else
    /// [`OUTSIDE_RADIUS`]: a `n × hw` block for queries `start..start + n`.
    fn radius_bias(&self, start: i64, n: i64, device: Device) -> Tensor {
        let hw = self.height * self.width;
        let opts = (Kind::Float, device);
        let keys = Tensor::arange(hw, (Kind::Int64, device));
        let queries = Tensor::arange_start(start, start + n, (Kind::Int64, device));
        let coords = |i: &Tensor| {
            (
                i.divide_scalar_mode(self.width, "floor")
                    .to_kind(Kind::Float),
                i.remainder(self.width).to_kind(Kind::Float),
            )
        };
        let (ky, kx) = coords(&keys);
        let (qy, qx) = coords(&queries);
        let dy = qy.unsqueeze(1) - ky.unsqueeze(0);
        let dx = qx.unsqueeze(1) - kx.unsqueeze(0);
        let distance = (&dy * &dy + &dx * &dx).sqrt();
        let inside = distance.lt(self.params.radius).to_kind(Kind::Float);
        (inside - Tensor::ones([1], opts)) * -OUTSIDE_RADIUS
    }

    /// Predicts the next frame's soft labels (`L × h × w`) from its features (`C × h × w`,
    /// L2-normalised per location), and makes them context for the frames after it.
    pub fn step(&mut self, features: &Tensor) -> Tensor {
        let query = locations(features);
        let device = query.device();
        let hw = self.height * self.width;
        let keys: Vec<&ContextFrame> = std::iter::once(&self.first).chain(&self.recent).collect();
        let labels = Tensor::cat(&keys.iter().map(|f| &f.labels).collect::<Vec<_>>(), 0);
        let classes = labels.size()[1];
        let k = self.params.top_k;
        let chunk = (AFFINITY_BUDGET / (hw * keys.len() as i64)).max(1);
        let mut predicted = Vec::new();
        let mut start = 0;
        while start < hw {
            let n = chunk.min(hw - start);
            let q = query.narrow(0, start, n);
            let bias = self.radius_bias(start, n, device);
            let affinities: Vec<Tensor> = keys
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let a = q.matmul(&f.features.transpose(0, 1));
                    // The first frame is long-term memory: not restricted in space.
                    if i == 0 { a } else { a + &bias }
                })
                .collect();
            let a = Tensor::cat(&affinities, 1) / self.params.temperature;
            let (top, index) = a.topk(k, 1, true, true);
            let weights = top.softmax(1, Kind::Float);
            let neighbours = labels
                .index_select(0, &index.view([-1]))
                .view([n, k, classes]);
            predicted.push((neighbours * weights.unsqueeze(-1)).sum_dim_intlist(
                [1i64].as_slice(),
                false,
                Kind::Float,
            ));
            start += n;
        }
        let predicted = Tensor::cat(&predicted, 0);
        self.recent.push_back(ContextFrame {
            index: self.next,
            features: query,
            labels: predicted.shallow_clone(),
        });
        if self.recent.len() > self.params.context {
            self.recent.pop_front();
        }
        self.next += 1;
        predicted
            .transpose(0, 1)
            .contiguous()
            .view([classes, self.height, self.width])
    }
}

/// Features `N × C × h × w` divided by their per-location L2 norm (`F.normalize(dim=1)`).
pub fn l2_normalize_channels(features: &Tensor) -> Tensor {
    let norm = features
        .norm_scalaropt_dim(2, [1i64].as_slice(), true)
        .clamp_min(1e-12);
    features / norm
}

/// An annotation (`H × W` object ids, `int64`) as one-hot labels over `classes` resized to the
/// feature grid (`classes × h × w`): bilinear with half-pixel centres and no antialiasing, what
/// videowalk's `cv2.resize` of the float one-hot map computes.
pub fn grid_labels(annotation: &Tensor, classes: i64, height: i64, width: i64) -> Tensor {
    annotation
        .one_hot(classes)
        .permute([2, 0, 1])
        .to_kind(Kind::Float)
        .unsqueeze(0)
        .upsample_bilinear2d([height, width], false, None, None)
        .squeeze_dim(0)
}

/// Soft labels (`L × h × w`) → per-pixel class at `height × width`: bilinear upsampling (as
/// `cv2.resize`) then the argmax over classes (the first on ties, as `np.argmax`).
pub fn hard_labels(soft: &Tensor, height: i64, width: i64) -> Tensor {
    soft.unsqueeze(0)
        .upsample_bilinear2d([height, width], false, None, None)
        .squeeze_dim(0)
        .argmax(0, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(context: usize, radius: f64) -> PropagationParams {
        PropagationParams {
            top_k: 10,
            temperature: 0.07,
            context,
            radius,
        }
    }

    #[test]
    fn the_context_is_videowalks_index_bank() {
        // context_index_bank(n, [0], N): for target t the keys are the first frame and the
        // padded video's n frames before it, i.e. frames max(0, t − n + j) for j < n.
        let (n, frames) = (4usize, 9usize);
        let features =
            l2_normalize_channels(&Tensor::rand([1, 3, 2, 2], (Kind::Float, Device::Cpu)))
                .squeeze_dim(0);
        let labels = Tensor::ones([2, 2, 2], (Kind::Float, Device::Cpu)) / 2.0;
        let mut p = Propagator::new(params(n, 12.0), &features, &labels);
        for t in 1..frames {
            let want: Vec<usize> = std::iter::once(0)
                .chain((0..n).map(|j| (t + j).saturating_sub(n)))
                .collect();
            assert_eq!(p.context_frames(), want, "target {t}");
            let soft = p.step(&features);
            assert_eq!(soft.size(), [2, 2, 2]);
        }
    }

    #[test]
    fn the_radius_bias_masks_locations_at_or_beyond_the_radius() {
        let features = Tensor::ones([1, 5, 7], (Kind::Float, Device::Cpu));
        let p = Propagator::new(params(2, 2.0), &features, &features);
        let bias = p.radius_bias(3, 20, Device::Cpu);
        assert_eq!(bias.size(), [20, 35]);
        for q in 0..20i64 {
            let (qy, qx) = ((q + 3) / 7, (q + 3) % 7);
            for k in 0..35i64 {
                let (ky, kx) = (k / 7, k % 7);
                let d = (((qy - ky).pow(2) + (qx - kx).pow(2)) as f64).sqrt();
                let want = if d < 2.0 { 0.0 } else { OUTSIDE_RADIUS };
                assert_eq!(bias.double_value(&[q, k]), want, "query {q} key {k}");
            }
        }
    }

    /// Features of a `h × w` frame showing a static background and square objects
    /// (`(top, left, side)` per object, drawn in order): each location is the unit vector of
    /// what it shows — a background position or an object-relative position — plus a shared
    /// component per class, so a location matches exactly the same content in other frames
    /// and, failing that, only content of its own class. Returns (features `C × h × w`,
    /// ids `h × w`).
    fn scene(h: i64, w: i64, objects: &[(i64, i64, i64)]) -> (Tensor, Vec<i64>) {
        let side = objects.iter().map(|o| o.2).max().unwrap_or(0);
        let classes = objects.len() as i64 + 1;
        let channels = h * w + objects.len() as i64 * side * side + classes;
        let mut ids = vec![0i64; (h * w) as usize];
        let mut content: Vec<i64> = (0..h * w).collect();
        for (o, &(top, left, s)) in objects.iter().enumerate() {
            for y in top.max(0)..(top + s).min(h) {
                for x in left.max(0)..(left + s).min(w) {
                    let i = (y * w + x) as usize;
                    ids[i] = o as i64 + 1;
                    content[i] = h * w + o as i64 * side * side + (y - top) * side + (x - left);
                }
            }
        }
        let mut data = vec![0f32; (channels * h * w) as usize];
        let plane = (h * w) as usize;
        for i in 0..plane {
            data[content[i] as usize * plane + i] = 1.0;
            let class_channel = (channels - classes + ids[i]) as usize;
            data[class_channel * plane + i] = 0.5;
        }
        let features = Tensor::from_slice(&data).view([channels, h, w]);
        (
            l2_normalize_channels(&features.unsqueeze(0)).squeeze_dim(0),
            ids,
        )
    }

    #[test]
    fn labels_follow_moving_objects_and_stay_distributions() {
        let (h, w) = (14, 18);
        let at = |t: i64| [(1 + t, 1 + 2 * t, 4), (9 - t, 13 - 2 * t, 4)];
        let (f0, ids0) = scene(h, w, &at(0));
        let labels0 = Tensor::from_slice(&ids0)
            .view([h, w])
            .one_hot(3)
            .permute([2, 0, 1])
            .to_kind(Kind::Float);
        let mut p = Propagator::new(params(3, 4.0), &f0, &labels0);
        for t in 1..5 {
            let (f, ids) = scene(h, w, &at(t));
            let soft = p.step(&f);
            let sums = soft.sum_dim_intlist([0i64].as_slice(), false, Kind::Float);
            assert!(
                (sums - 1.0).abs().max().double_value(&[]) < 1e-5,
                "frame {t}: the soft labels of a location must sum to 1"
            );
            let got = Vec::<i64>::try_from(soft.argmax(0, false).view([-1])).expect("labels");
            assert_eq!(got, ids, "frame {t}");
        }
    }

    #[test]
    fn grid_labels_and_hard_labels_round_trip_a_coarse_mask() {
        // A mask made of whole 4×4 cells survives down- and upsampling by 4 exactly.
        let cells = [0i64, 1, 2, 0, 2, 1];
        let mask: Vec<i64> = (0..8 * 12)
            .map(|i| cells[((i / 12) / 4 * 3 + (i % 12) / 4) as usize])
            .collect();
        let annotation = Tensor::from_slice(&mask).view([8, 12]);
        let grid = grid_labels(&annotation, 3, 2, 3);
        assert_eq!(grid.size(), [3, 2, 3]);
        let back = Vec::<i64>::try_from(hard_labels(&grid, 8, 12).view([-1])).expect("labels");
        assert_eq!(back, mask);
    }
}
