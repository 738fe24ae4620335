//! Intent model latency: one request on one thread, and a batch of 32 on two threads, with
//! the encoder run for every request (`cascade: false`); and one request on one thread with
//! the lexical cascade as served (the n-gram half decides alone where it is sure); and the
//! work around the encoder: a request's tokens and n-gram features (`prepare`), and the
//! lexical half's decision on them (`lexical_decision`).
//! Needs the shipped model and ONNX Runtime (`scripts/setup.sh`).
//!
//!     cargo bench -p casegraph-engine --features onnx --bench classify

use std::path::Path;

use casegraph_engine::classify::Classifier;
use casegraph_engine::classify::onnx::{OnnxClassifier, Options};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const REQUESTS: &[&str] = &[
    "I ordered my card ten days ago and it's still not here",
    "Why was I charged a fee for a transfer to my sister?",
    "Meine Karte wurde am Automaten eingezogen, was soll ich tun?",
    "Hiermit kündige ich mein Konto fristgerecht zum nächstmöglichen Zeitpunkt.",
    "Can I top up with a credit card from another bank?",
    "Die Überweisung an meinen Vermieter ist immer noch ausstehend",
    "my card payment in a shop in Rome was declined although I have money",
    "Wie lange dauert es, bis die Rückerstattung auf meinem Konto ist?",
];

fn model_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/intent-e5-de-en")
}

fn bench(c: &mut Criterion) {
    let one = OnnxClassifier::load(
        &model_dir(),
        &Options {
            intra_threads: 1,
            sessions: 1,
            top_k: 5,
            cascade: false,
        },
    )
    .expect("model loads (run scripts/setup.sh)");
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("single_request_1_thread", |b| {
        b.iter(|| {
            i = (i + 1) % REQUESTS.len();
            one.classify(REQUESTS[i]).expect("prediction")
        })
    });
    drop(one);
    let cascade = OnnxClassifier::load(
        &model_dir(),
        &Options {
            intra_threads: 1,
            ..Options::default()
        },
    )
    .expect("model loads");
    g.bench_function("single_request_1_thread_cascade", |b| {
        b.iter(|| {
            i = (i + 1) % REQUESTS.len();
            cascade.classify(REQUESTS[i]).expect("prediction")
        })
    });
    g.bench_function("prepare", |b| {
        b.iter(|| {
            i = (i + 1) % REQUESTS.len();
            cascade.prepare(REQUESTS[i]).expect("prepared")
        })
    });
    let prepared: Vec<_> = REQUESTS
        .iter()
        .map(|r| cascade.prepare(r).expect("prepared"))
        .collect();
    g.bench_function("lexical_decision", |b| {
        b.iter(|| {
            i = (i + 1) % prepared.len();
            cascade.decide_early(&prepared[i])
        })
    });
    drop(cascade);
    let two = OnnxClassifier::load(
        &model_dir(),
        &Options {
            intra_threads: 2,
            sessions: 1,
            top_k: 5,
            cascade: false,
        },
    )
    .expect("model loads");
    let batch: Vec<&str> = REQUESTS.iter().cycle().take(32).copied().collect();
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("batch_32_2_threads", |b| {
        b.iter(|| two.classify_batch(&batch).expect("predictions"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = bench
}
criterion_main!(benches);
