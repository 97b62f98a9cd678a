//! The local fleet's stand-in for DynamoDB global tables between its two regions
//! (infra/local/README.md, "Two regions"): the integration tests' replicator
//! (tests/it/harness/replicator.rs, last writer wins after a lag, pausable) run as a process of
//! its own, with a small HTTP API the chaos run drives. A test tool: kurz never ships it.
//!
//! Usage: `cargo run --example fleet-replicator -- TABLE ENDPOINT_A ENDPOINT_B LAG_MS LISTEN`
//!
//! - `POST /pause`: a partition between the regions; nothing is replicated until `/resume`.
//!   It answers once no read of a stream is under way, so every write made after its answer
//!   waits for `/resume`.
//! - `POST /resume`
//! - `POST /settle`: answers 200 once every write made before it was read from both streams
//!   and applied, 504 after 60 s.
//! - `POST /backfill/{side}`: copies every item of side `side`'s table (0: A, 1: B) to the
//!   other's, as global tables fill a replica added again after its region was lost; answers
//!   the number of items copied.
//! - `GET /status`: `{"applied": N}`, the writes applied so far.

#[path = "../../tests/it/harness/mod.rs"]
mod harness;

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};

use harness::replicator::Replicator;

const SETTLE_WITHIN: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [table, a, b, lag_ms, listen] = args.as_slice() else {
        eprintln!("usage: fleet-replicator TABLE ENDPOINT_A ENDPOINT_B LAG_MS LISTEN");
        std::process::exit(2);
    };
    let Ok(lag_ms) = lag_ms.parse::<u64>() else {
        eprintln!("fleet-replicator: LAG_MS must be a whole number of milliseconds, not {lag_ms}");
        std::process::exit(2);
    };
    let replicator =
        web::Data::new(Replicator::start(table, a, b, Duration::from_millis(lag_ms)).await);
    println!("fleet-replicator: {table} between {a} and {b}, lag {lag_ms} ms, control on {listen}");
    HttpServer::new(move || {
        App::new()
            .app_data(replicator.clone())
            .route("/pause", web::post().to(pause))
            .route("/resume", web::post().to(resume))
            .route("/settle", web::post().to(settle))
            .route("/backfill/{side}", web::post().to(backfill))
            .route("/status", web::get().to(status))
    })
    .workers(1)
    .bind(listen.as_str())?
    .run()
    .await
}

async fn pause(replicator: web::Data<Replicator>) -> HttpResponse {
    replicator.pause().await;
    println!("fleet-replicator: paused");
    HttpResponse::NoContent().finish()
}

async fn resume(replicator: web::Data<Replicator>) -> HttpResponse {
    replicator.resume();
    println!("fleet-replicator: resumed");
    HttpResponse::NoContent().finish()
}

async fn settle(replicator: web::Data<Replicator>) -> HttpResponse {
    if replicator.settled(SETTLE_WITHIN).await {
        HttpResponse::Ok().body(format!("settled: {} applied\n", replicator.applied()))
    } else {
        HttpResponse::GatewayTimeout().body(format!(
            "not settled within {SETTLE_WITHIN:?} (paused, or a side does not answer)\n"
        ))
    }
}

async fn backfill(replicator: web::Data<Replicator>, side: web::Path<usize>) -> HttpResponse {
    let side = side.into_inner();
    if side > 1 {
        return HttpResponse::NotFound().body("side is 0 (A) or 1 (B)\n");
    }
    match replicator.try_backfill(side).await {
        Ok(copied) => {
            println!("fleet-replicator: backfilled {copied} items from side {side}");
            HttpResponse::Ok().body(format!("{copied}\n"))
        }
        Err(e) => HttpResponse::BadGateway().body(format!("{e}\n")),
    }
}

async fn status(replicator: web::Data<Replicator>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(format!("{{\"applied\": {}}}\n", replicator.applied()))
}
