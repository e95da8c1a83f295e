//! The hold/release branch of IPP printing, against a small in-process IPP printer that offers
//! Hold-Job/Release-Job and `job-retain-until` — ippeveprinter (the real printer the CLI tests
//! use) offers neither, so this is the one place these attributes and operations are exercised.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ipp::attribute::IppAttribute;
use ipp::model::{DelimiterTag, IppVersion, StatusCode};
use ipp::parser::IppParser;
use ipp::reader::IppReader;
use ipp::request::IppRequestResponse;
use ipp::value::IppValue;
use stampline_client::print::{DocFormat, JobEnd, PrintOptions, Printer};
use tokio::sync::watch;
use zeroize::Zeroizing;

const GET_PRINTER_ATTRIBUTES: i16 = 0x0B;
const CREATE_JOB: i16 = 0x05;
const SEND_DOCUMENT: i16 = 0x06;
const CANCEL_JOB: i16 = 0x08;
const GET_JOB_ATTRIBUTES: i16 = 0x09;
const RELEASE_JOB: i16 = 0x0D;

/// What the fake printer saw and where its one job is.
#[derive(Debug, Default)]
struct Seen {
    ops: Vec<i16>,
    job_attributes: Vec<(String, String)>,
    document_bytes: usize,
    job_state: i32,
}

fn attr(name: &str, value: IppValue) -> IppAttribute {
    IppAttribute::with_name(name, value).unwrap()
}

fn keywords(list: &[&str]) -> IppValue {
    IppValue::Array(
        list.iter()
            .map(|k| IppValue::Keyword((*k).try_into().unwrap()))
            .collect(),
    )
}

fn answer(seen: &Mutex<Seen>, body: &[u8]) -> Vec<u8> {
    let (head, rest) = {
        let req = IppParser::new(IppReader::new(std::io::Cursor::new(body.to_vec())))
            .parse()
            .unwrap();
        let head = req.to_bytes().len();
        (req, body.len() - head)
    };
    let op = head.header().operation_or_status;
    let id = head.header().request_id;
    let mut s = seen.lock().unwrap();
    s.ops.push(op);
    let mut resp =
        IppRequestResponse::new_response(IppVersion::v1_1(), StatusCode::SuccessfulOk, id).unwrap();
    let job = |state: i32| {
        vec![
            attr("job-id", IppValue::Integer(1)),
            attr("job-state", IppValue::Enum(state)),
        ]
    };
    match op {
        GET_PRINTER_ATTRIBUTES => {
            for a in [
                attr("printer-state", IppValue::Enum(3)),
                attr("printer-is-accepting-jobs", IppValue::Boolean(true)),
                attr(
                    "document-format-supported",
                    IppValue::Array(vec![
                        IppValue::MimeMediaType("image/png".try_into().unwrap()),
                        IppValue::MimeMediaType("application/pdf".try_into().unwrap()),
                    ]),
                ),
                attr(
                    "operations-supported",
                    IppValue::Array(
                        [2, 4, 5, 6, 8, 9, 0x0B, 0x0C, 0x0D]
                            .into_iter()
                            .map(IppValue::Enum)
                            .collect(),
                    ),
                ),
                attr(
                    "job-hold-until-supported",
                    keywords(&["no-hold", "indefinite"]),
                ),
                attr("job-retain-until-supported", keywords(&["none"])),
                attr(
                    "job-creation-attributes-supported",
                    keywords(&["copies", "job-hold-until", "job-retain-until"]),
                ),
            ] {
                resp.attributes_mut()
                    .add(DelimiterTag::PrinterAttributes, a);
            }
        }
        CREATE_JOB => {
            for g in head.attributes().groups_of(DelimiterTag::JobAttributes) {
                for a in g.attributes() {
                    s.job_attributes
                        .push((a.name().to_string(), a.value().to_string()));
                }
            }
            let held = s.job_attributes.iter().any(|(n, _)| n == "job-hold-until");
            s.job_state = if held { 4 } else { 3 };
            for a in job(s.job_state) {
                resp.attributes_mut().add(DelimiterTag::JobAttributes, a);
            }
        }
        SEND_DOCUMENT => {
            s.document_bytes = rest;
            if s.job_state == 3 {
                s.job_state = 9;
            }
        }
        RELEASE_JOB => s.job_state = 9,
        CANCEL_JOB => s.job_state = 7,
        GET_JOB_ATTRIBUTES => {
            for a in job(s.job_state) {
                resp.attributes_mut().add(DelimiterTag::JobAttributes, a);
            }
        }
        _ => {}
    }
    resp.to_bytes().to_vec()
}

/// Starts the fake printer on a free port; returns its URI and what it sees.
async fn fake_printer() -> (String, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let state = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let state = Arc::clone(&state);
                    async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        let out = answer(&state, &body);
                        Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(out))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("ipp://127.0.0.1:{port}/ipp/print"), seen)
}

#[tokio::test]
async fn a_printer_that_offers_holding_gets_a_held_job_released_after_the_document() {
    let (uri, seen) = fake_printer().await;
    let printer = Printer::new(&uri, PrintOptions::default()).unwrap();
    let job = printer
        .start_job(DocFormat::Png, "SL0100000001-1")
        .await
        .unwrap();
    let (_link, lost) = watch::channel(None);
    let report = job.finish(Zeroizing::new(vec![7u8; 1000]), lost).await;
    assert_eq!(report.end, JobEnd::Completed, "{report:?}");
    assert_eq!(report.link_lost, None);

    let s = seen.lock().unwrap();
    assert_eq!(
        s.ops[..4],
        [
            GET_PRINTER_ATTRIBUTES,
            CREATE_JOB,
            SEND_DOCUMENT,
            RELEASE_JOB
        ],
        "created held, the document, then released: {:?}",
        s.ops
    );
    assert!(s.ops[4..].iter().all(|op| *op == GET_JOB_ATTRIBUTES));
    assert_eq!(s.document_bytes, 1000);
    for (name, value) in [
        ("copies", "1"),
        ("job-retain-until", "none"),
        ("job-hold-until", "indefinite"),
    ] {
        assert!(
            s.job_attributes
                .iter()
                .any(|(n, v)| n == name && v == value),
            "{name}={value} missing from {:?}",
            s.job_attributes
        );
    }
}

#[tokio::test]
async fn a_held_job_is_cancelled_and_never_released_when_the_link_is_lost_first() {
    let (uri, seen) = fake_printer().await;
    let printer = Printer::new(&uri, PrintOptions::default()).unwrap();
    let job = printer
        .start_job(DocFormat::Pdf, "SL0100000001-2")
        .await
        .unwrap();
    let (link, lost) = watch::channel(None);
    link.send_replace(Some("no valid heartbeat within 10000 ms".into()));
    let report = job.finish(Zeroizing::new(vec![7u8; 1000]), lost).await;
    assert_eq!(report.end, JobEnd::Canceled, "{report:?}");
    assert!(report.link_lost.is_some());

    let s = seen.lock().unwrap();
    assert!(
        !s.ops.contains(&SEND_DOCUMENT),
        "no document on a lost link: {:?}",
        s.ops
    );
    assert!(!s.ops.contains(&RELEASE_JOB), "{:?}", s.ops);
    assert!(s.ops.contains(&CANCEL_JOB), "{:?}", s.ops);
}
