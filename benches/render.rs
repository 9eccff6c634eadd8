//! Human rendering of a large diagnostic set: 20,000 diagnostics pointing into one
//! 20,000-line file (what `tollgate check` prints for a policy with that many errors).
//!
//! ```text
//! cargo bench --bench render -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::diagnostic::{Code, Diagnostic, Diagnostics, Origin, SourceFile, Sources};

const N: usize = 20_000;

fn many_diagnostics() -> Diagnostics {
    let mut text = String::new();
    let mut starts = Vec::new();
    for i in 0..N {
        starts.push(text.len());
        text.push_str(&format!("[models.m{i}]\nupstreem = \"u\"\n"));
    }
    let mut sources = Sources::default();
    let file = sources.add(SourceFile::new("big.toml", text));
    let items = starts
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            let key = s + format!("[models.m{i}]\n").len();
            Diagnostic::error(
                Code::UnknownKey,
                format!("unknown key `upstreem` in `models.m{i}`"),
                Origin::File {
                    file,
                    span: key..key + "upstreem".len(),
                },
            )
            .with_label("expected one of `upstream`, `price` or `context_window`")
            .with_help("did you mean `upstream`?")
        })
        .collect();
    Diagnostics {
        items,
        sources: Arc::new(sources),
    }
}

fn bench_render(c: &mut Criterion) {
    let d = many_diagnostics();
    let mut g = c.benchmark_group("render");
    g.sample_size(10);
    g.bench_function("human, 20000 diagnostics of one file", |b| {
        b.iter(|| black_box(black_box(&d).render(false)).len())
    });
    g.finish();
}

criterion_group!(benches, bench_render);
criterion_main!(benches);
