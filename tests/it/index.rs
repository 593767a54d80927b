//! `EmbeddingIndex` against a brute-force reference (every metric, k = 1 to
//! the index size, duplicates, ties), its errors, determinism across thread
//! counts, safetensors round trips and the `.npy` export read back.

use metric_loss::index::{EmbeddingIndex, IndexError, Metric, SearchResult};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The definition, in `f64`, of the distance each metric reports.
fn reference_distance(metric: Metric, q: &[f32], r: &[f32]) -> f64 {
    let dot: f64 = q.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum();
    let sq = |v: &[f32]| v.iter().map(|&a| a as f64 * a as f64).sum::<f64>();
    match metric {
        Metric::Euclidean => q
            .iter()
            .zip(r)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum::<f64>()
            .sqrt(),
        Metric::SquaredEuclidean => q
            .iter()
            .zip(r)
            .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
            .sum(),
        Metric::Cosine => {
            let (nq, nr) = (sq(q).sqrt(), sq(r).sqrt());
            if nq == 0.0 || nr == 0.0 {
                1.0
            } else {
                (1.0 - dot / (nq * nr)).max(0.0)
            }
        }
        Metric::Dot => -dot,
    }
}

/// Brute force: every distance, a full sort by (distance, id, position).
/// Returns `(distance, id, position)` of the `k` nearest per query.
fn brute_force(
    metric: Metric,
    refs: &[f32],
    ids: &[u64],
    queries: &[f32],
    dim: usize,
    k: usize,
) -> Vec<Vec<(f64, u64, usize)>> {
    queries
        .chunks(dim)
        .map(|q| {
            let mut all: Vec<(f64, u64, usize)> = refs
                .chunks(dim)
                .enumerate()
                .map(|(p, r)| (reference_distance(metric, q, r), ids[p], p))
                .collect();
            all.sort_by(|a, b| a.partial_cmp(b).unwrap());
            all.truncate(k);
            all
        })
        .collect()
}

/// Checks a search result against brute force. With `exact`, ids and
/// distances must agree exactly (data on which `f32` arithmetic is exact);
/// otherwise distances agree within rounding, ids agree wherever the
/// reference's distances are apart by more than rounding, and inside a
/// near-tie every id returned must be at the reference's distance.
#[allow(clippy::too_many_arguments)]
fn check(
    metric: Metric,
    found: &SearchResult,
    refs: &[f32],
    ids: &[u64],
    labels: &[usize],
    queries: &[f32],
    dim: usize,
    k: usize,
    exact: bool,
) {
    let want = brute_force(metric, refs, ids, queries, dim, k);
    assert_eq!(found.len(), want.len());
    assert_eq!(found.k(), k);
    let by_id = |id: u64| ids.iter().position(|&i| i == id).unwrap();
    for (qi, (row, want)) in found.rows().zip(&want).enumerate() {
        let q = &queries[qi * dim..(qi + 1) * dim];
        let scale = 1.0 + q.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
        let tol = if exact { 0.0 } else { 1e-4 * scale };
        for (r, &(d, id, pos)) in want.iter().enumerate() {
            let got_d = row.distances[r] as f64;
            let got_id = row.ids[r];
            let ctx = || {
                format!(
                    "{metric:?} query {qi} rank {r}/{k}: got ({got_d}, {got_id}), want ({d}, {id})"
                )
            };
            if exact {
                assert_eq!(got_id, id, "{}", ctx());
                assert_eq!(row.labels[r], labels[pos], "{}", ctx());
                // exact, then rounded once to f32 (as the root is)
                assert_eq!(row.distances[r], d as f32, "{}", ctx());
                continue;
            }
            assert!((got_d - d).abs() <= tol, "{}", ctx());
            let p = by_id(got_id);
            let true_d = reference_distance(metric, q, &refs[p * dim..(p + 1) * dim]);
            assert!(
                (true_d - d).abs() <= 2.0 * tol,
                "{}: its true distance is {true_d}",
                ctx()
            );
            assert_eq!(row.labels[r], labels[p], "{}", ctx());
            let apart =
                |o: Option<&(f64, u64, usize)>| o.is_none_or(|o| (o.0 - d).abs() > 2.0 * tol);
            if apart(r.checked_sub(1).map(|i| &want[i])) && apart(want.get(r + 1)) {
                assert_eq!(got_id, id, "{}", ctx());
            }
        }
        assert!(
            row.distances.windows(2).all(|w| w[0] <= w[1]),
            "query {qi} not sorted"
        );
    }
}

fn uniform(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

fn index_of(
    metric: Metric,
    rows: &[f32],
    ids: &[u64],
    labels: &[usize],
    dim: usize,
) -> EmbeddingIndex {
    let mut index = EmbeddingIndex::new(metric, dim);
    index.add_with_ids(rows, ids, labels);
    index
}

/// Random data, sizes around the query blocks (64) and reference tiles
/// (1024), every metric, k from 1 to the index size, shuffled ids.
#[test]
fn matches_brute_force_on_random_data() {
    let mut rng = StdRng::seed_from_u64(1);
    for &(n, nq, dim) in &[(1, 3, 5), (7, 1, 1), (100, 70, 33), (1100, 130, 16)] {
        let refs = uniform(&mut rng, n * dim);
        let queries = uniform(&mut rng, nq * dim);
        let mut ids: Vec<u64> = (0..n as u64).map(|i| i * 7 + 3).collect();
        // shuffled, so that id order is not row order
        for i in (1..n).rev() {
            ids.swap(i, rng.gen_range(0..=i));
        }
        let labels: Vec<usize> = (0..n).map(|_| rng.gen_range(0..5)).collect();
        for metric in Metric::ALL {
            let index = index_of(metric, &refs, &ids, &labels, dim);
            for k in [1, 5.min(n), n] {
                let found = index.search(&queries, k);
                check(
                    metric, &found, &refs, &ids, &labels, &queries, dim, k, false,
                );
            }
        }
    }
}

/// Small integers make every inner product and norm exact in `f32`: ids
/// and distances must equal brute force exactly, ties included (values in
/// {-1, 0, 1} over 3 columns: a few dozen distinct points for 1,500 rows,
/// so almost every neighbour is tied, and ties go to the lower id).
/// Cosine's unit rows are rounded, so two directions at the same angle can
/// differ in the last bit: there the check allows rounding.
#[test]
fn ties_go_to_the_lower_id_exactly() {
    let mut rng = StdRng::seed_from_u64(2);
    let (n, nq, dim) = (1500, 90, 3);
    let small = |rng: &mut StdRng, len| -> Vec<f32> {
        (0..len).map(|_| rng.gen_range(-1..=1) as f32).collect()
    };
    let refs = small(&mut rng, n * dim);
    let queries = small(&mut rng, nq * dim);
    let mut ids: Vec<u64> = (0..n as u64).collect();
    for i in (1..n).rev() {
        ids.swap(i, rng.gen_range(0..=i));
    }
    let labels: Vec<usize> = (0..n).map(|i| i % 3).collect();
    for metric in Metric::ALL {
        let index = index_of(metric, &refs, &ids, &labels, dim);
        for k in [1, 10, 200, n] {
            let found = index.search(&queries, k);
            let exact = metric != Metric::Cosine;
            check(
                metric, &found, &refs, &ids, &labels, &queries, dim, k, exact,
            );
        }
    }
}

/// Duplicated rows, in different tiles, and queries that are copies of
/// references: a copy is at Euclidean distance exactly 0, and duplicates
/// come out side by side, lower id first, at the same distance.
#[test]
fn duplicates_are_exactly_zero_apart_and_ordered_by_id() {
    let mut rng = StdRng::seed_from_u64(3);
    let (n, dim) = (1300, 24);
    let mut refs = uniform(&mut rng, n * dim);
    // row 1250 (tile 2) = row 5 (tile 1) = row 700; queries copy row 5 and row 42
    for copy in [700, 1250] {
        let src: Vec<f32> = refs[5 * dim..6 * dim].to_vec();
        refs[copy * dim..(copy + 1) * dim].copy_from_slice(&src);
    }
    let ids: Vec<u64> = (0..n as u64).map(|i| 10_000 - i).collect(); // later rows, lower ids
    let labels = vec![0; n];
    let mut queries = refs[5 * dim..6 * dim].to_vec();
    queries.extend_from_slice(&refs[42 * dim..43 * dim]);
    let copies = [ids[1250], ids[700], ids[5]]; // lower id first
    for metric in Metric::ALL {
        let index = index_of(metric, &refs, &ids, &labels, dim);
        let found = index.search(&queries, n);
        let row = found.row(0);
        let ranks: Vec<usize> = copies
            .iter()
            .map(|c| row.ids.iter().position(|id| id == c).unwrap())
            .collect();
        // side by side, lower id first, bit-equal distances
        assert_eq!(ranks, [ranks[0], ranks[0] + 1, ranks[0] + 2], "{metric:?}");
        let d: Vec<u32> = ranks.iter().map(|&r| row.distances[r].to_bits()).collect();
        assert!(d.windows(2).all(|w| w[0] == w[1]), "{metric:?}: {d:?}");
        if metric != Metric::Dot {
            // (under dot, a longer row can beat the query's own copy)
            assert_eq!(ranks[0], 0, "{metric:?}");
        }
        if matches!(metric, Metric::Euclidean | Metric::SquaredEuclidean) {
            assert_eq!(&row.distances[..3], &[0.0; 3], "{metric:?}");
            assert_eq!(found.row(1).ids[0], ids[42]);
            assert_eq!(found.row(1).distances[0], 0.0);
        }
    }
}

#[test]
fn zero_rows_under_cosine_are_at_distance_one() {
    let mut index = EmbeddingIndex::new(Metric::Cosine, 2);
    index.add(&[0.0, 0.0, 1.0, 0.0], &[0, 1]);
    let found = index.search(&[0.0, 0.0, 2.0, 0.0], 2);
    assert_eq!(found.row(0).distances, &[1.0, 1.0]);
    assert_eq!(found.row(1).ids, &[1, 0]);
    assert_eq!(found.row(1).distances, &[0.0, 1.0]);
}

#[test]
fn rows_added_in_parts_search_like_rows_added_at_once() {
    let mut rng = StdRng::seed_from_u64(4);
    let dim = 8;
    let refs = uniform(&mut rng, 300 * dim);
    let labels: Vec<usize> = (0..300).collect();
    let queries = uniform(&mut rng, 20 * dim);
    let mut whole = EmbeddingIndex::new(Metric::Euclidean, dim);
    whole.add(&refs, &labels);
    let mut parts = EmbeddingIndex::new(Metric::Euclidean, dim);
    parts.add(&refs[..100 * dim], &labels[..100]);
    parts.add(&refs[100 * dim..], &labels[100..]);
    assert_eq!(parts, whole);
    assert_eq!(parts.ids(), &(0..300).collect::<Vec<u64>>()[..]);
    assert_eq!(parts.search(&queries, 7), whole.search(&queries, 7));
}

/// The blocks are shared among threads; the answer must not depend on how.
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = StdRng::seed_from_u64(5);
    let dim = 32;
    let refs = uniform(&mut rng, 2100 * dim);
    let labels: Vec<usize> = (0..2100).map(|i| i % 10).collect();
    let queries = uniform(&mut rng, 200 * dim);
    for metric in Metric::ALL {
        let mut index = EmbeddingIndex::new(metric, dim);
        index.add(&refs, &labels);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| index.search(&queries, 15));
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(|| index.search(&queries, 15));
        assert_eq!(one, three, "{metric:?}");
        assert_eq!(one, index.search(&queries, 15), "{metric:?}");
    }
}

#[test]
fn bad_input_gets_a_typed_error() {
    assert_eq!(
        EmbeddingIndex::try_new(Metric::Dot, 0),
        Err(IndexError::ZeroWidth)
    );
    let mut index = EmbeddingIndex::new(Metric::Euclidean, 3);
    assert_eq!(index.try_search(&[0.0; 3], 1), Err(IndexError::EmptyIndex));
    assert_eq!(
        index.try_add(&[0.0; 5], &[0, 1]),
        Err(IndexError::WidthMismatch {
            what: "rows",
            values: 5,
            width: 3,
            rows: Some(2)
        })
    );
    // rows of width 2 given to an index of width 3: 4 rows' worth of values
    // for 2 labels... is 8 values, not 6
    assert!(matches!(
        index.try_add(&[0.0; 8], &[0, 1]),
        Err(IndexError::WidthMismatch { values: 8, .. })
    ));
    assert_eq!(
        index.try_add_with_ids(&[0.0; 6], &[1], &[0, 1]),
        Err(IndexError::CountMismatch {
            what: "ids",
            given: 1,
            rows: 2
        })
    );
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30] {
        assert_eq!(
            index.try_add(&[0.0, 0.0, 0.0, 1.0, bad, 2.0], &[0, 1]),
            Err(IndexError::NonFinite {
                what: "rows",
                row: 1
            }),
            "{bad}"
        );
    }
    assert!(index.is_empty(), "a refused add adds nothing");
    index.add(&[0.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[0, 1]);
    assert_eq!(
        index.try_search(&[0.0; 3], 0),
        Err(IndexError::InvalidK { k: 0, len: 2 })
    );
    assert_eq!(
        index.try_search(&[0.0; 3], 3),
        Err(IndexError::InvalidK { k: 3, len: 2 })
    );
    assert!(matches!(
        index.try_search(&[0.0; 4], 1),
        Err(IndexError::WidthMismatch {
            what: "queries",
            values: 4,
            width: 3,
            rows: None
        })
    ));
    assert_eq!(
        index.try_search(&[0.0, 0.0, 0.0, f32::NAN, 0.0, 0.0], 1),
        Err(IndexError::NonFinite {
            what: "queries",
            row: 1
        })
    );
    // no queries: an empty answer
    let none = index.search(&[], 2);
    assert!(none.is_empty());
    assert_eq!((none.len(), none.k()), (0, 2));
    // the plain methods panic with the message
    let msg = std::panic::catch_unwind(|| index.search(&[0.0; 3], 5))
        .unwrap_err()
        .downcast::<String>()
        .unwrap();
    assert!(msg.contains("k must be in 1..=2"), "{msg}");
}

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("metric-loss-index-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn save_and_load_round_trip_bit_for_bit() {
    let mut rng = StdRng::seed_from_u64(6);
    let dim = 10;
    let refs = uniform(&mut rng, 150 * dim);
    let ids: Vec<u64> = (0..150).map(|i| u64::MAX - 3 * i).collect();
    let labels: Vec<usize> = (0..150).map(|i| i * 1_000_003).collect();
    let queries = uniform(&mut rng, 9 * dim);
    for metric in Metric::ALL {
        let index = index_of(metric, &refs, &ids, &labels, dim);
        let path = temp(&format!("{}.safetensors", metric.name()));
        index.save(&path);
        let loaded = EmbeddingIndex::load(&path);
        assert_eq!(loaded.metric(), metric);
        assert_eq!(loaded.dim(), dim);
        assert_eq!(loaded.ids(), index.ids());
        assert_eq!(loaded.labels(), index.labels());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(loaded.rows()), bits(index.rows()));
        assert_eq!(loaded, index);
        assert_eq!(loaded.search(&queries, 11), index.search(&queries, 11));
    }
    // an empty index round-trips too (and still refuses to be searched)
    let empty = EmbeddingIndex::new(Metric::Dot, 7);
    let path = temp("empty.safetensors");
    empty.save(&path);
    let loaded = EmbeddingIndex::load(&path);
    assert_eq!(loaded, empty);
    assert_eq!(loaded.try_search(&[0.0; 7], 1), Err(IndexError::EmptyIndex));
}

#[test]
fn loading_something_else_is_a_format_error() {
    assert!(matches!(
        EmbeddingIndex::try_load(temp("does-not-exist.safetensors")),
        Err(IndexError::Io { .. })
    ));
    let junk = temp("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file at all").unwrap();
    assert!(matches!(
        EmbeddingIndex::try_load(&junk),
        Err(IndexError::Format { .. })
    ));
    // a model checkpoint from dfdx: safetensors, but not an index
    use metric_loss::prelude::*;
    let dev = Cpu::default();
    let model = dev.build_module::<Linear<3, 2>, f32>();
    let ckpt = temp("model.safetensors");
    model.save_safetensors(&ckpt).unwrap();
    let err = EmbeddingIndex::try_load(&ckpt).unwrap_err();
    assert!(matches!(err, IndexError::Format { .. }), "{err}");
    // a saved index whose bytes were damaged after the header
    let mut index = EmbeddingIndex::new(Metric::Cosine, 2);
    index.add(&[3.0, 4.0], &[0]);
    let path = temp("damaged.safetensors");
    index.save(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    let first = (0.6f32).to_le_bytes(); // the first stored value: 3/5
    let at = bytes.windows(4).rposition(|w| w == first).unwrap();
    bytes[at..at + 4].copy_from_slice(&2.0f32.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = EmbeddingIndex::try_load(&path).unwrap_err();
    assert!(err.to_string().contains("not a unit row"), "{err}");
}

/// The export read back with a Rust `.npy` reader (npyz): the header numpy
/// and faiss read (dtype, shape, C order) and every value.
#[test]
fn npy_export_reads_back() {
    let mut rng = StdRng::seed_from_u64(7);
    let dim = 5;
    let refs = uniform(&mut rng, 40 * dim);
    let ids: Vec<u64> = (0..40).map(|i| 1000 + i).collect();
    let labels: Vec<usize> = (0..40).map(|i| i % 4).collect();
    for metric in [Metric::Euclidean, Metric::Cosine] {
        let index = index_of(metric, &refs, &ids, &labels, dim);
        let dir = temp(&format!("npy-{}", metric.name()));
        let files = index.export_npy(&dir);

        let npy = npyz::NpyFile::new(std::fs::File::open(&files.embeddings).unwrap()).unwrap();
        assert_eq!(npy.shape(), &[40, dim as u64]);
        assert_eq!(npy.order(), npyz::Order::C);
        assert_eq!(npy.dtype().descr(), "'<f4'");
        let values: Vec<f32> = npy.into_vec().unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&values), bits(index.rows()));

        for (path, want) in [
            (
                &files.labels,
                labels.iter().map(|&l| l as i64).collect::<Vec<_>>(),
            ),
            (&files.ids, ids.iter().map(|&i| i as i64).collect()),
        ] {
            let npy = npyz::NpyFile::new(std::fs::File::open(path).unwrap()).unwrap();
            assert_eq!(npy.shape(), &[40]);
            assert_eq!(npy.dtype().descr(), "'<i8'");
            assert_eq!(npy.into_vec::<i64>().unwrap(), want);
        }
    }
    // ids beyond int64 cannot be exported
    let mut index = EmbeddingIndex::new(Metric::Euclidean, 1);
    index.add_with_ids(&[0.0], &[u64::MAX], &[0]);
    assert_eq!(
        index.try_export_npy(temp("npy-too-large")),
        Err(IndexError::OutOfRange {
            what: "id",
            value: u64::MAX
        })
    );
}
