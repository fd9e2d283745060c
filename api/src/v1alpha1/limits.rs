//! Bounds of the numeric and string fields. The schema attributes and
//! [`resolve`](super::ContrastiveRunSpec::resolve) read the same constants, so the apiserver and
//! the operator agree on every range.

/// Most nodes (pods) a run may use.
pub const MAX_NODES: u32 = 1024;
/// Most GPUs per node.
pub const MAX_GPUS_PER_NODE: u32 = 16;
/// Most training epochs.
pub const MAX_EPOCHS: u32 = 10_000;
/// Largest global batch size.
pub const MAX_BATCH_SIZE: u32 = 65_536;
/// Smallest batch a rank may get: batch norm cannot train on a single sample.
pub const MIN_BATCH_SIZE_PER_RANK: u32 = 2;
/// Largest base learning rate.
pub const MAX_LR: f64 = 100.0;
/// Narrowest backbone (channels of the first stage).
pub const MIN_WIDTH: u32 = 8;
/// Widest backbone.
pub const MAX_WIDTH: u32 = 512;
/// Backbone widths are multiples of this (whole SIMD lanes; torchvision's 64 is one).
pub const WIDTH_MULTIPLE: u32 = 8;
/// Largest MoCo queue (negatives).
pub const MAX_QUEUE_SIZE: u32 = 1_048_576;
/// Smallest projection dimension.
pub const MIN_DIM: u32 = 8;
/// Largest projection dimension.
pub const MAX_DIM: u32 = 8192;
/// Largest softmax temperature.
pub const MAX_TEMPERATURE: f64 = 10.0;
/// Fewest large crops: crop 0 is the query, crop 1 the key.
pub const MIN_LARGE_CROPS: u32 = 2;
/// Most large crops.
pub const MAX_LARGE_CROPS: u32 = 8;
/// Most small crops.
pub const MAX_SMALL_CROPS: u32 = 16;
/// Smallest crop side in pixels.
pub const MIN_CROP_SIZE: u32 = 8;
/// Largest crop side in pixels.
pub const MAX_CROP_SIZE: u32 = 1024;
/// Most entries in `autoAugment.crops`.
pub const MAX_AUTO_AUGMENT_CROPS: u32 = MAX_LARGE_CROPS + MAX_SMALL_CROPS;
/// Largest `knnLoss.topK`.
pub const MAX_KNN_TOP_K: u32 = 1024;
/// Largest `knnLoss.weight`.
pub const MAX_KNN_WEIGHT: f64 = 10.0;
/// Most checkpoints kept.
pub const MAX_CHECKPOINTS_KEPT: u32 = 1000;
/// Most restarts `failurePolicy.maxRestarts` may allow.
pub const MAX_RESTARTS: u32 = 100;
/// Shortest `failurePolicy.stallTimeout`, in seconds.
pub const MIN_STALL_TIMEOUT_SECONDS: u64 = 10;
/// Longest `failurePolicy.stallTimeout`, in seconds (a week).
pub const MAX_STALL_TIMEOUT_SECONDS: u64 = 7 * 24 * 3600;
/// Lowest port the worker may listen on (it runs as non-root).
pub const MIN_PORT: u16 = 1024;
/// Most evaluations per run.
pub const MAX_EVALUATIONS: u32 = 16;
/// Largest `k` of a kNN or DAVIS evaluation.
pub const MAX_EVAL_K: u32 = 1000;
/// Most images in either split of the kNN monitor (features of both stay in memory on rank 0).
pub const MAX_MONITOR_IMAGES: u32 = 100_000;
/// Largest linear-SVM cost `C`.
pub const MAX_SVM_COST: f64 = 1000.0;
/// Most fine-tuning epochs of a segmentation evaluation.
pub const MAX_EVAL_EPOCHS: u32 = 1000;
/// Largest batch of a segmentation evaluation.
pub const MAX_EVAL_BATCH_SIZE: u32 = 4096;
/// Longest container image reference.
pub const MAX_IMAGE_LENGTH: u32 = 1024;
/// Longest filesystem path.
pub const MAX_PATH_LENGTH: u32 = 1024;
/// Longest DNS-1123 label (evaluation names, label values).
pub const MAX_DNS_LABEL_LENGTH: u32 = 63;
/// Longest DNS-1123 subdomain (object names, NFS servers).
pub const MAX_DNS_SUBDOMAIN_LENGTH: u32 = 253;
/// Longest URL.
pub const MAX_URL_LENGTH: u32 = 2048;

/// Regular expression of an absolute path without `..` components (RE2 syntax, no look-ahead, so
/// the apiserver and the `regex` crate read it alike).
pub const ABSOLUTE_PATH_PATTERN: &str = r"^(/([^/.][^/]*|\.([^/.][^/]*)?|\.\.[^/]+)?)+$";
/// Regular expression of a DNS-1123 label.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// Regular expression of a DNS-1123 subdomain.
pub const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Regular expression of a Go duration as Kubernetes writes them (`90s`, `15m`, `1h30m`).
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";
/// Regular expression of a Kubernetes resource quantity written as a string, without a minus
/// sign: Kubernetes refuses pods that ask for negative amounts.
pub const QUANTITY_PATTERN: &str = r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";
/// Regular expression of an `http://` URL.
pub const HTTP_URL_PATTERN: &str = r"^http://[^\s/?#]+([/?#]\S*)?$";
/// Regular expression of a label value (empty allowed by Kubernetes, not here).
pub const LABEL_VALUE_PATTERN: &str = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$";

/// Node directories a `hostPath` volume may not be, lie inside or contain (so `/` and `/var` are
/// refused too): the node's configuration, kernel interfaces, devices, the container runtimes'
/// sockets and state, the kubelet's state (every pod's secrets and tokens) and the logs. A
/// deny-list cannot foresee every sensitive directory or symlink on a node; it stops the
/// dangerous mounts a run has no reason to ask for.
pub const FORBIDDEN_HOST_PATHS: [&str; 13] = [
    "/boot",
    "/dev",
    "/etc",
    "/proc",
    "/root",
    "/run",
    "/sys",
    "/var/lib/containerd",
    "/var/lib/docker",
    "/var/lib/etcd",
    "/var/lib/kubelet",
    "/var/log",
    "/var/run",
];
