//! Micro-benchmarks of the write path's code generation: base62, the id permutation, the hash
//! fallback, and the inverse a lookup of a generated code pays. Run: `cargo bench --bench codes`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kurz::code::base62::{decode, encode_padded, space};
use kurz::code::{CodeGenerator, Permutation, hash_code};

fn codes(c: &mut Criterion) {
    c.bench_function("base62_encode_padded_7", |b| {
        b.iter(|| encode_padded(black_box(3_521_614_606_207), 7))
    });
    c.bench_function("base62_decode_7", |b| {
        b.iter(|| decode(black_box("zZ09aB7")))
    });
    let permutation = Permutation::new(b"bench-key", space(7));
    let mut id = 0u64;
    c.bench_function("permutation_forward_62^7", |b| {
        b.iter(|| {
            id = (id + 1) % space(7);
            permutation.forward(black_box(id))
        })
    });
    let keyed = Permutation::keyed(b"bench-key", space(7));
    c.bench_function("keyed_permutation_forward_62^7", |b| {
        b.iter(|| {
            id = (id + 1) % space(7);
            keyed.forward(black_box(id))
        })
    });
    let generator = CodeGenerator::new(b"bench-key");
    c.bench_function("code_for_id", |b| {
        b.iter(|| {
            id += 1;
            generator.code_for(black_box(id))
        })
    });
    // What the embedded store computes for every lookup of a generated code: its id.
    let made: Vec<String> = (0..1_000).filter_map(|id| generator.code_for(id)).collect();
    let mut at = 0usize;
    c.bench_function("code_position", |b| {
        b.iter(|| {
            at = (at + 1) % made.len();
            generator.position(black_box(&made[at]))
        })
    });
    c.bench_function("hash_code_7", |b| {
        b.iter(|| {
            hash_code(
                black_box("https://example.com/some/long/path?q=1"),
                &[7; 16],
                7,
            )
        })
    });
}

criterion_group!(benches, codes);
criterion_main!(benches);
