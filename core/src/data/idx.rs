//! Reader for the IDX format of MNIST, Fashion-MNIST and friends.
//!
//! An IDX file is a 4-byte magic number `0x00 0x00 <type> <ndims>`, then
//! `ndims` big-endian `u32` dimension sizes, then the payload in row-major
//! order. Only the unsigned-byte element type (`0x08`) is supported, which is
//! what every MNIST-like data set uses. Files may be gzip-compressed (detected
//! by the `1f 8b` magic, whatever the file name) or raw.
//!
//! ```
//! use metric_loss_core::data::idx::Mnist;
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../data");
//! let mnist = Mnist::load(dir).unwrap();
//! assert_eq!(mnist.len(), 10_000);
//! assert_eq!(mnist.image(0).unwrap().len(), 28 * 28);
//! ```

use std::fs;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use thiserror::Error;

/// The only supported IDX element type: unsigned byte.
pub const IDX_TYPE_U8: u8 = 0x08;

/// File names tried, in order, for the images of [`Mnist::load`].
pub const IMAGE_FILE_NAMES: [&str; 6] = [
    "images-idx3-ubyte.gz",
    "images-idx3-ubyte",
    "train-images-idx3-ubyte.gz",
    "train-images-idx3-ubyte",
    "train-images.idx3-ubyte.gz",
    "train-images.idx3-ubyte",
];

/// File names tried, in order, for the labels of [`Mnist::load`].
pub const LABEL_FILE_NAMES: [&str; 6] = [
    "labels-idx1-ubyte.gz",
    "labels-idx1-ubyte",
    "train-labels-idx1-ubyte.gz",
    "train-labels-idx1-ubyte",
    "train-labels.idx1-ubyte.gz",
    "train-labels.idx1-ubyte",
];

/// What can go wrong when reading IDX files. Every variant names the file
/// (or folder) involved.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum IdxError {
    /// The data folder does not exist or is not a directory.
    #[error("data folder {path} does not exist or is not a directory")]
    MissingFolder {
        /// The folder that was looked for.
        path: PathBuf,
    },
    /// None of the candidate file names exists in the folder.
    #[error("no {what} file in {dir}: tried {}", tried.join(", "))]
    MissingFile {
        /// `"images"` or `"labels"`.
        what: &'static str,
        /// The folder searched.
        dir: PathBuf,
        /// The file names tried, in order.
        tried: Vec<String>,
    },
    /// Reading the file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file starts with the gzip magic but does not decompress.
    #[error("bad gzip data in {path}: {source}")]
    BadGzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: std::io::Error,
    },
    /// The first two bytes of the (decompressed) file are not zero.
    #[error("{path} is not an IDX file: magic number is {magic:#010x}, expected 0x0000TTNN")]
    WrongMagic {
        /// The file.
        path: PathBuf,
        /// The first four bytes, big-endian.
        magic: u32,
    },
    /// The element type byte is not `0x08` (unsigned byte).
    #[error("{path}: unsupported IDX element type {type_byte:#04x} (only 0x08 = u8 is supported)")]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// The type byte found.
        type_byte: u8,
    },
    /// The file ends before the magic number and dimension sizes do.
    #[error("{path}: truncated IDX header: need {expected} bytes, file has {found}")]
    TruncatedHeader {
        /// The file.
        path: PathBuf,
        /// Bytes the header needs.
        expected: usize,
        /// Bytes the (decompressed) file has.
        found: usize,
    },
    /// The dimensions are unusable: zero of them, or their product overflows.
    #[error("{path}: bad IDX dimensions {dims:?}: {reason}")]
    BadDims {
        /// The file.
        path: PathBuf,
        /// The dimensions read from the header.
        dims: Vec<usize>,
        /// What is wrong with them.
        reason: &'static str,
    },
    /// The payload length disagrees with the product of the dimensions.
    #[error("{path}: dims {dims:?} need a payload of {expected} bytes, found {found}")]
    PayloadLength {
        /// The file.
        path: PathBuf,
        /// The dimensions read from the header.
        dims: Vec<usize>,
        /// Product of the dimensions.
        expected: usize,
        /// Bytes actually present after the header.
        found: usize,
    },
    /// The array has the wrong number of dimensions for its role.
    #[error("{path}: expected {expected} dimensions ({role}), found dims {dims:?}")]
    WrongRank {
        /// The file.
        path: PathBuf,
        /// The dimensions read from the header.
        dims: Vec<usize>,
        /// Number of dimensions required.
        expected: usize,
        /// What the file is used for, e.g. `"images: n x rows x cols"`.
        role: &'static str,
    },
    /// The images and labels files hold different numbers of items.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// Number of images.
        n_images: usize,
        /// The labels file.
        labels: PathBuf,
        /// Number of labels.
        n_labels: usize,
    },
}

/// An n-dimensional array of bytes read from an IDX file.
///
/// `data` is row-major; `data.len()` is always the product of `dims`.
///
/// ```
/// use metric_loss_core::data::idx::IdxArray;
///
/// // magic 0x00000802 (u8, 2 dims), dims 2 x 3, then 6 bytes
/// let bytes = [0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6];
/// let a = IdxArray::parse(&bytes, "inline").unwrap();
/// assert_eq!(a.dims, vec![2, 3]);
/// assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimension sizes, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Reads an IDX file, gzip-compressed or raw.
    ///
    /// ```
    /// use metric_loss_core::data::idx::IdxArray;
    ///
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/labels-idx1-ubyte.gz");
    /// let labels = IdxArray::read(path).unwrap();
    /// assert_eq!(labels.dims, vec![10_000]);
    /// ```
    pub fn read(path: impl AsRef<Path>) -> Result<IdxArray, IdxError> {
        let path = path.as_ref();
        let raw = fs::read(path).map_err(|source| IdxError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&raw, path)
    }

    /// Parses the bytes of an IDX file (gzip-compressed or raw); `path` is
    /// only used to name the source in errors.
    ///
    /// ```
    /// use metric_loss_core::data::idx::{IdxArray, IdxError};
    ///
    /// let err = IdxArray::parse(&[0, 0, 8], "short.idx").unwrap_err();
    /// assert!(matches!(err, IdxError::TruncatedHeader { .. }));
    /// assert!(err.to_string().contains("short.idx"));
    /// ```
    pub fn parse(bytes: &[u8], path: impl AsRef<Path>) -> Result<IdxArray, IdxError> {
        let path = path.as_ref();
        if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
            let mut out = Vec::new();
            GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .map_err(|source| IdxError::BadGzip {
                    path: path.to_path_buf(),
                    source,
                })?;
            Self::parse_raw(out, path)
        } else {
            Self::parse_raw(bytes.to_vec(), path)
        }
    }

    fn parse_raw(mut bytes: Vec<u8>, path: &Path) -> Result<IdxArray, IdxError> {
        let p = || path.to_path_buf();
        if bytes.len() < 4 {
            return Err(IdxError::TruncatedHeader {
                path: p(),
                expected: 4,
                found: bytes.len(),
            });
        }
        if bytes[0] != 0 || bytes[1] != 0 {
            return Err(IdxError::WrongMagic {
                path: p(),
                magic: u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            });
        }
        if bytes[2] != IDX_TYPE_U8 {
            return Err(IdxError::UnsupportedType {
                path: p(),
                type_byte: bytes[2],
            });
        }
        let ndims = bytes[3] as usize;
        let header = 4 + 4 * ndims;
        if bytes.len() < header {
            return Err(IdxError::TruncatedHeader {
                path: p(),
                expected: header,
                found: bytes.len(),
            });
        }
        let dims: Vec<usize> = bytes[4..header]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
            .collect();
        if dims.is_empty() {
            return Err(IdxError::BadDims {
                path: p(),
                dims,
                reason: "zero dimensions",
            });
        }
        let Some(expected) = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
            return Err(IdxError::BadDims {
                path: p(),
                dims,
                reason: "product of dimensions overflows usize",
            });
        };
        let found = bytes.len() - header;
        if found != expected {
            return Err(IdxError::PayloadLength {
                path: p(),
                dims,
                expected,
                found,
            });
        }
        bytes.drain(..header);
        Ok(IdxArray { dims, data: bytes })
    }

    /// Number of items: the outermost dimension.
    pub fn len(&self) -> usize {
        self.dims[0]
    }

    /// Whether the outermost dimension is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An MNIST-like data set: grey-level images scaled to `[0, 1]` and their
/// labels (any `u8` value; labels above 9 are accepted).
///
/// ```
/// use metric_loss_core::data::idx::Mnist;
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../data");
/// let mnist = Mnist::load(dir).unwrap();
/// let (train, test) = mnist.split_at(8_000);
/// assert_eq!((train.len(), test.len()), (8_000, 2_000));
/// assert_eq!(train.image_dim(), 784);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Mnist {
    /// `len() * rows * cols` pixels, image after image, row-major, in `[0, 1]`.
    pub images: Vec<f32>,
    /// One label per image.
    pub labels: Vec<usize>,
    /// Image height in pixels.
    pub rows: usize,
    /// Image width in pixels.
    pub cols: usize,
}

impl Mnist {
    /// Loads the images and labels files found in `dir`.
    ///
    /// The names in [`IMAGE_FILE_NAMES`] and [`LABEL_FILE_NAMES`] are tried
    /// in order: the bundled `images-idx3-ubyte.gz` / `labels-idx1-ubyte.gz`,
    /// then the `train-*` names of full MNIST and Fashion-MNIST, each
    /// gzip-compressed or not. Use [`Mnist::from_files`] for other names
    /// (e.g. the `t10k-*` test split).
    ///
    /// ```
    /// use metric_loss_core::data::idx::{IdxError, Mnist};
    ///
    /// let err = Mnist::load("/no/such/folder").unwrap_err();
    /// assert!(matches!(err, IdxError::MissingFolder { .. }));
    /// ```
    pub fn load(dir: impl AsRef<Path>) -> Result<Mnist, IdxError> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(IdxError::MissingFolder {
                path: dir.to_path_buf(),
            });
        }
        let images = find_file(dir, "images", &IMAGE_FILE_NAMES)?;
        let labels = find_file(dir, "labels", &LABEL_FILE_NAMES)?;
        Self::from_files(images, labels)
    }

    /// Loads an images file (3 dims: n x rows x cols) and a labels file
    /// (1 dim: n) given by path.
    ///
    /// ```
    /// use metric_loss_core::data::idx::Mnist;
    ///
    /// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/");
    /// let m = Mnist::from_files(
    ///     format!("{dir}images-idx3-ubyte.gz"),
    ///     format!("{dir}labels-idx1-ubyte.gz"),
    /// )
    /// .unwrap();
    /// assert_eq!((m.rows, m.cols), (28, 28));
    /// ```
    pub fn from_files(
        images: impl AsRef<Path>,
        labels: impl AsRef<Path>,
    ) -> Result<Mnist, IdxError> {
        let (ipath, lpath) = (images.as_ref(), labels.as_ref());
        let img = IdxArray::read(ipath)?;
        if img.dims.len() != 3 {
            return Err(IdxError::WrongRank {
                path: ipath.to_path_buf(),
                dims: img.dims,
                expected: 3,
                role: "images: n x rows x cols",
            });
        }
        let lab = IdxArray::read(lpath)?;
        if lab.dims.len() != 1 {
            return Err(IdxError::WrongRank {
                path: lpath.to_path_buf(),
                dims: lab.dims,
                expected: 1,
                role: "labels: n",
            });
        }
        if img.dims[0] != lab.dims[0] {
            return Err(IdxError::CountMismatch {
                images: ipath.to_path_buf(),
                n_images: img.dims[0],
                labels: lpath.to_path_buf(),
                n_labels: lab.dims[0],
            });
        }
        Ok(Mnist {
            images: img.data.iter().map(|&b| b as f32 / 255.0).collect(),
            labels: lab.data.iter().map(|&b| b as usize).collect(),
            rows: img.dims[1],
            cols: img.dims[2],
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image: `rows * cols`.
    pub fn image_dim(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `i`, or `None` if `i >= len()`.
    ///
    /// ```
    /// # use metric_loss_core::data::idx::Mnist;
    /// # let m = Mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../data")).unwrap();
    /// assert!(m.image(9_999).is_some());
    /// assert!(m.image(10_000).is_none());
    /// ```
    pub fn image(&self, i: usize) -> Option<&[f32]> {
        let d = self.image_dim();
        self.images
            .get(i.checked_mul(d)?..i.checked_add(1)?.checked_mul(d)?)
    }

    /// The label of image `i`, or `None` if `i >= len()`.
    pub fn label(&self, i: usize) -> Option<usize> {
        self.labels.get(i).copied()
    }

    /// A copy of images `range` (clamped to `0..len()`).
    ///
    /// ```
    /// # use metric_loss_core::data::idx::Mnist;
    /// # let m = Mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../data")).unwrap();
    /// let part = m.select(100..110);
    /// assert_eq!(part.len(), 10);
    /// assert_eq!(part.image(0), m.image(100));
    /// ```
    pub fn select(&self, range: Range<usize>) -> Mnist {
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        let d = self.image_dim();
        Mnist {
            images: self.images[start * d..end * d].to_vec(),
            labels: self.labels[start..end].to_vec(),
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// Splits into the first `n` images and the rest (`n` clamped to `len()`).
    pub fn split_at(&self, n: usize) -> (Mnist, Mnist) {
        (self.select(0..n), self.select(n..self.len()))
    }

    /// Number of images of each label `0..=max label` (empty if no images).
    ///
    /// ```
    /// # use metric_loss_core::data::idx::Mnist;
    /// # let m = Mnist::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../data")).unwrap();
    /// assert_eq!(m.class_counts()[0], 1001);
    /// ```
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.labels.iter().max().map_or(0, |&m| m + 1)];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }
}

fn find_file(dir: &Path, what: &'static str, names: &[&str]) -> Result<PathBuf, IdxError> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| IdxError::MissingFile {
            what,
            dir: dir.to_path_buf(),
            tried: names.iter().map(|s| s.to_string()).collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn data_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../data")
    }

    /// A fresh, empty temp folder unique to this process and call.
    fn temp_dir(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "metric-loss-idx-{}-{}-{}",
            std::process::id(),
            tag,
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(payload);
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn bundled_mnist_loads_with_documented_counts() {
        let m = Mnist::load(data_dir()).unwrap();
        assert_eq!(m.len(), 10_000);
        assert_eq!((m.rows, m.cols), (28, 28));
        assert_eq!(m.images.len(), 10_000 * 784);
        assert_eq!(
            m.class_counts(),
            vec![1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
        );
        assert!(m.images.iter().all(|&p| (0.0..=1.0).contains(&p)));
        // 255 maps exactly to 1.0, and the digits use the full range.
        assert!(m.images.contains(&1.0));
        assert!(m.images.contains(&0.0));
    }

    #[test]
    fn raw_header_of_bundled_files() {
        let img = IdxArray::read(data_dir().join("images-idx3-ubyte.gz")).unwrap();
        assert_eq!(img.dims, vec![10_000, 28, 28]);
        assert_eq!(img.data.len(), 7_840_000);
        let lab = IdxArray::read(data_dir().join("labels-idx1-ubyte.gz")).unwrap();
        assert_eq!(lab.dims, vec![10_000]);
        assert!(lab.data.iter().all(|&l| l <= 9));
    }

    #[test]
    fn raw_and_gzip_give_the_same_array_and_train_names_are_found() {
        let d = temp_dir("names");
        // 2 images of 2x3, labels 3 and 200 (labels > 9 are fine).
        let img = idx_bytes(&[2, 2, 3], &[0, 51, 102, 153, 204, 255, 255, 0, 0, 0, 0, 0]);
        fs::write(d.join("train-images-idx3-ubyte"), &img).unwrap();
        fs::write(
            d.join("train-labels-idx1-ubyte.gz"),
            gz(&idx_bytes(&[2], &[3, 200])),
        )
        .unwrap();
        let m = Mnist::load(&d).unwrap();
        assert_eq!(m.labels, vec![3, 200]);
        assert_eq!((m.rows, m.cols), (2, 3));
        assert_eq!(m.image(0).unwrap(), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_eq!(m.image(1).unwrap(), &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(m.image(2), None);
        assert_eq!(m.image(usize::MAX), None);
        assert_eq!(m.label(1), Some(200));
        assert_eq!(
            IdxArray::parse(&gz(&img), "x").unwrap(),
            IdxArray::parse(&img, "y").unwrap()
        );
        let (a, b) = m.split_at(1);
        assert_eq!((a.labels, b.labels), (vec![3], vec![200]));
        let (a, b) = m.split_at(99);
        assert_eq!((a.len(), b.len()), (2, 0));
        assert_eq!(m.select(5..9).len(), 0);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_folder() {
        let d = temp_dir("gone");
        fs::remove_dir_all(&d).unwrap();
        let e = Mnist::load(&d).unwrap_err();
        assert!(matches!(e, IdxError::MissingFolder { ref path } if *path == d));
        assert!(e.to_string().contains(&d.display().to_string()));
    }

    #[test]
    fn missing_file_lists_names_tried() {
        let d = temp_dir("empty");
        let e = Mnist::load(&d).unwrap_err();
        match &e {
            IdxError::MissingFile { what, tried, .. } => {
                assert_eq!(*what, "images");
                assert_eq!(tried.len(), 6);
            }
            other => panic!("wrong error {other:?}"),
        }
        let msg = e.to_string();
        assert!(msg.contains("images-idx3-ubyte.gz"), "{msg}");
        assert!(msg.contains("train-images-idx3-ubyte"), "{msg}");
        // images present, labels missing
        fs::write(d.join("images-idx3-ubyte"), idx_bytes(&[1, 1, 1], &[7])).unwrap();
        let e = Mnist::load(&d).unwrap_err();
        assert!(matches!(e, IdxError::MissingFile { what: "labels", .. }));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn truncated_header_and_payload() {
        let d = temp_dir("trunc");
        let f = d.join("t.idx");
        // 3 dims announced, only 1 dim present: header needs 16 bytes, has 8.
        fs::write(&f, [0, 0, 8, 3, 0, 0, 0, 1]).unwrap();
        let e = IdxArray::read(&f).unwrap_err();
        assert!(
            matches!(
                e,
                IdxError::TruncatedHeader {
                    expected: 16,
                    found: 8,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("t.idx"));
        // Fewer than 4 bytes.
        assert!(matches!(
            IdxArray::parse(&[0, 0], "x").unwrap_err(),
            IdxError::TruncatedHeader {
                expected: 4,
                found: 2,
                ..
            }
        ));
        // Payload short by 2 bytes: dims 2x3 need 6, 4 present.
        fs::write(&f, idx_bytes(&[2, 3], &[1, 2, 3, 4])).unwrap();
        let e = IdxArray::read(&f).unwrap_err();
        assert!(
            matches!(
                e,
                IdxError::PayloadLength {
                    expected: 6,
                    found: 4,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains('6') && msg.contains('4') && msg.contains("t.idx"));
        // Truncated gzip stream.
        let full = gz(&idx_bytes(&[4], &[1, 2, 3, 4]));
        fs::write(&f, &full[..full.len() - 6]).unwrap();
        assert!(matches!(
            IdxArray::read(&f).unwrap_err(),
            IdxError::BadGzip { .. }
        ));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn wrong_magic_and_type() {
        let e = IdxArray::parse(&[0x50, 0x4b, 3, 4, 0, 0], "zip.idx").unwrap_err();
        assert!(
            matches!(
                e,
                IdxError::WrongMagic {
                    magic: 0x504b_0304,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("zip.idx"));
        // type 0x0d = f32
        let e = IdxArray::parse(&[0, 0, 0x0d, 1, 0, 0, 0, 0], "f.idx").unwrap_err();
        assert!(matches!(
            e,
            IdxError::UnsupportedType {
                type_byte: 0x0d,
                ..
            }
        ));
    }

    #[test]
    fn bad_dims() {
        // Payload longer than dims say.
        let e = IdxArray::parse(&idx_bytes(&[2], &[1, 2, 3]), "long.idx").unwrap_err();
        assert!(matches!(
            e,
            IdxError::PayloadLength {
                expected: 2,
                found: 3,
                ..
            }
        ));
        // Zero dimensions.
        let e = IdxArray::parse(&[0, 0, 8, 0], "z.idx").unwrap_err();
        assert!(matches!(e, IdxError::BadDims { .. }));
        // Product overflows (on 32-bit) or needs a huge payload (on 64-bit).
        let e = IdxArray::parse(&idx_bytes(&[u32::MAX; 3], &[]), "big.idx").unwrap_err();
        assert!(matches!(
            e,
            IdxError::BadDims { .. } | IdxError::PayloadLength { .. }
        ));
        // Images file with 2 dims, labels file with 2 dims.
        let d = temp_dir("rank");
        fs::write(d.join("images-idx3-ubyte"), idx_bytes(&[1, 1], &[7])).unwrap();
        fs::write(d.join("labels-idx1-ubyte"), idx_bytes(&[1], &[7])).unwrap();
        assert!(matches!(
            Mnist::load(&d).unwrap_err(),
            IdxError::WrongRank { expected: 3, .. }
        ));
        fs::write(d.join("images-idx3-ubyte"), idx_bytes(&[1, 1, 1], &[7])).unwrap();
        fs::write(d.join("labels-idx1-ubyte"), idx_bytes(&[1, 1], &[7])).unwrap();
        assert!(matches!(
            Mnist::load(&d).unwrap_err(),
            IdxError::WrongRank { expected: 1, .. }
        ));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn corrupt_gzip() {
        let d = temp_dir("gz");
        let f = d.join("images-idx3-ubyte.gz");
        let mut bytes = gz(&idx_bytes(&[2, 1, 1], &[1, 2]));
        // Flip bytes of the deflate stream and CRC.
        let n = bytes.len();
        for b in &mut bytes[10..n] {
            *b ^= 0x5a;
        }
        fs::write(&f, &bytes).unwrap();
        fs::write(d.join("labels-idx1-ubyte"), idx_bytes(&[2], &[0, 1])).unwrap();
        let e = Mnist::load(&d).unwrap_err();
        assert!(
            matches!(e, IdxError::BadGzip { ref path, .. } if *path == f),
            "{e:?}"
        );
        assert!(e.to_string().contains("images-idx3-ubyte.gz"));
        // Only the magic.
        assert!(matches!(
            IdxArray::parse(&[0x1f, 0x8b], "m.gz").unwrap_err(),
            IdxError::BadGzip { .. }
        ));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn count_mismatch() {
        let d = temp_dir("count");
        fs::write(d.join("images-idx3-ubyte"), idx_bytes(&[2, 1, 1], &[1, 2])).unwrap();
        fs::write(d.join("labels-idx1-ubyte"), idx_bytes(&[3], &[0, 1, 2])).unwrap();
        let e = Mnist::load(&d).unwrap_err();
        assert!(
            matches!(
                e,
                IdxError::CountMismatch {
                    n_images: 2,
                    n_labels: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("images-idx3-ubyte") && msg.contains("labels-idx1-ubyte"));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn io_error_names_file() {
        let d = temp_dir("io");
        // A directory where a file is expected.
        let e = IdxArray::read(&d).unwrap_err();
        assert!(matches!(e, IdxError::Io { .. }));
        assert!(e.to_string().contains(&d.display().to_string()));
        fs::remove_dir_all(&d).unwrap();
    }
}
