//! `search_mnist`: the trained encoder used for what it is for — an
//! [`EmbeddingIndex`] of the 8,000 reference digits, the nearest
//! references of held-out digits drawn as a grid, and the index saved and
//! exported for numpy, faiss and vector databases.

use metric_loss::eval::Distance;
use metric_loss::index::{
    EmbeddingIndex, Metric, NpyFiles, write_embeddings_npy, write_labels_npy,
};

use plotters::style::RGBColor;

use super::*;

/// Queries drawn in the grid.
pub const SHOWN_QUERIES: usize = 8;
/// Neighbours drawn per query.
pub const SHOWN_NEIGHBOURS: usize = 8;

/// Result of `search_mnist`.
#[derive(Debug, Clone)]
pub struct SearchSummary {
    pub training: Training,
    /// Every held-out digit against the index (cosine).
    pub retrieval: RetrievalMetrics,
    /// The grid of queries and neighbours.
    pub png: PathBuf,
    /// The index, saved (safetensors).
    pub index: PathBuf,
    /// The index exported as `.npy` (references).
    pub npy: NpyFiles,
    /// The held-out digits' embeddings and labels as `.npy` (queries).
    pub queries_npy: (PathBuf, PathBuf),
    /// Milliseconds to build the index and search every held-out digit.
    pub search_ms: f64,
}

pub fn run_search(args: &Args) -> Result<SearchSummary> {
    if args.validation {
        return Err("search_mnist searches the protocol's held-out digits: \
                    --validation (for choosing recipes) does not apply"
            .into());
    }
    let run = TripletRun::new(args)?;
    let e = run.embeddings();
    let (mnist, training) = (run.mnist, run.training);
    let (refs, queries) = e.split_at(TRAIN * 128);
    let (ref_labels, query_labels) = mnist.labels.split_at(TRAIN);

    // The loss compares unit-length embeddings: rank by cosine. Ids are the
    // digits' numbers in the data set (0..8000 here).
    let start = Instant::now();
    let mut index = EmbeddingIndex::try_new(Metric::Cosine, 128)?;
    index.try_add(refs, ref_labels)?;
    let all = index.try_search(queries, SHOWN_NEIGHBOURS)?;
    let search_ms = start.elapsed().as_secs_f64() * 1e3;

    // P@1 and MAP@R of every held-out digit (retrieval_metrics runs the
    // same index).
    let retrieval = retrieval_metrics(
        queries,
        query_labels,
        ReferenceSet::Separate {
            embeddings: refs,
            labels: ref_labels,
        },
        128,
        &RetrievalOptions {
            distance: Distance::Cosine,
            ..Default::default()
        },
    )?;

    // Eight held-out digits, spread over the set.
    let step = (queries.len() / 128) / SHOWN_QUERIES;
    let shown: Vec<usize> = (0..SHOWN_QUERIES).map(|i| i * step).collect();
    let png = out_file(&args.out, "search_mnist.png")?;
    draw_grid(&png, &mnist, &shown, query_labels, &all)?;

    let index_path = out_file(&args.out, "search_mnist_index.safetensors")?;
    index.try_save(&index_path)?;
    let npy_dir = args.out.join("search_mnist_npy");
    let npy = index.try_export_npy(&npy_dir)?;
    let queries_npy = (
        npy_dir.join("query_embeddings.npy"),
        npy_dir.join("query_labels.npy"),
    );
    write_embeddings_npy(&queries_npy.0, queries, 128)?;
    write_labels_npy(&queries_npy.1, query_labels)?;
    Ok(SearchSummary {
        training,
        retrieval,
        png,
        index: index_path,
        npy,
        queries_npy,
        search_ms,
    })
}

/// One row per shown query: the query, then its nearest references framed
/// green (same digit) or red (another digit), each captioned with its digit
/// and cosine distance.
fn draw_grid(
    path: &Path,
    mnist: &Mnist,
    shown: &[usize],
    query_labels: &[usize],
    found: &metric_loss::index::SearchResult,
) -> Result<()> {
    let (same, other) = (RGBColor(30, 160, 60), RGBColor(215, 40, 40));
    let image = |i: usize| mnist.image(i).ok_or_else(|| format!("no digit {i}"));
    let mut rows = Vec::with_capacity(shown.len());
    let mut row_labels = Vec::with_capacity(shown.len());
    for &q in shown {
        let label = query_labels[q];
        let mut row = vec![plot::Cell {
            pixels: image(TRAIN + q)?,
            caption: format!("digit {label}"),
            frame: None,
        }];
        let hit = found.row(q);
        for ((&id, &d), &l) in hit.ids.iter().zip(hit.distances).zip(hit.labels) {
            row.push(plot::Cell {
                pixels: image(id as usize)?,
                caption: format!("{l}  d={d:.3}"),
                frame: Some(if l == label { same } else { other }),
            });
        }
        rows.push(row);
        row_labels.push(format!("#{}", TRAIN + q));
    }
    let column_labels = std::iter::once("query".to_string())
        .chain((1..=found.k()).map(|r| format!("{r}.")))
        .collect();
    plot::image_grid(
        path,
        &plot::ImageGrid {
            title: "search_mnist: the 8 nearest of 8,000 reference digits (cosine distance d)",
            width: 28,
            height: 28,
            scale: 3,
            rows,
            row_labels,
            column_labels,
            legend: vec![
                ("same digit as the query".to_string(), same),
                ("another digit".to_string(), other),
            ],
        },
    )
}
