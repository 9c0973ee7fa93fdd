//! Frames and messages round-trip, and torn or oversized ones are errors.

use super::*;

#[test]
fn worker_frames_round_trip() {
    let mut wire = Vec::new();
    write_hello(&mut wire, &Hello::current()).unwrap();
    write_value(&mut wire, 9, &vec![2.5f64; 3]).unwrap();
    write_failure(&mut wire, 9, &JobFailure::UnknownTask).unwrap();
    write_done(&mut wire, 9, 2, 1234).unwrap();
    let mut r = &wire[..];
    let frames: Vec<Vec<u8>> = std::iter::from_fn(|| read_frame(&mut r).unwrap()).collect();
    assert_eq!(frames.len(), 4);
    assert_eq!(
        parse_from_worker(&frames[0]).unwrap(),
        FromWorker::Hello(Hello::current())
    );
    let FromWorker::Value { batch: 9, body } = parse_from_worker(&frames[1]).unwrap() else {
        panic!("not a value of batch 9");
    };
    assert_eq!(codec::decode::<Vec<f64>>(body).unwrap(), vec![2.5; 3]);
    assert_eq!(
        parse_from_worker(&frames[2]).unwrap(),
        FromWorker::JobFailure {
            batch: 9,
            failure: JobFailure::UnknownTask
        }
    );
    assert_eq!(
        parse_from_worker(&frames[3]).unwrap(),
        FromWorker::Done {
            id: 9,
            count: 2,
            elapsed_ns: 1234
        }
    );
    assert!(parse_from_worker(&[7]).is_err());
    assert!(parse_from_worker(&[]).is_err());
}

#[test]
fn values_are_decoded_from_the_stream_and_must_fill_their_frame() {
    let mut wire = Vec::new();
    write_value(&mut wire, 1, &(1u32, 2u32)).unwrap();
    write_done(&mut wire, 1, 1, 5).unwrap();
    write_value(&mut wire, 2, &(3u32, 4u32)).unwrap();
    let mut r = &wire[..];
    let read = |r: &mut &[u8]| {
        read_incoming(r, |_, body| codec::decode_from_reader::<(u32, u32)>(body)).unwrap()
    };
    assert!(matches!(
        read(&mut r),
        Some(Incoming::Value {
            batch: 1,
            value: Ok((1, 2)),
            ..
        })
    ));
    assert!(matches!(read(&mut r), Some(Incoming::Other(p)) if done_batch(&p) == Some(1)));
    // Decoding as a shorter type leaves bytes in the frame: an error,
    // and the stream stays in step.
    let short = read_incoming(&mut r, |_, body| codec::decode_from_reader::<u32>(body)).unwrap();
    assert!(matches!(
        short,
        Some(Incoming::Value {
            batch: 2,
            value: Err(_),
            ..
        })
    ));
    assert!(read_incoming(&mut r, |_, _| Ok::<_, CodecError>(()))
        .unwrap()
        .is_none());
    // A frame cut short is the end of the stream, not a decoding error.
    let cut = &wire[..wire.len() - 3];
    let mut r = cut;
    read(&mut r);
    read(&mut r);
    let torn = read_incoming(&mut r, |_, body| {
        codec::decode_from_reader::<(u32, u32)>(body)
    });
    assert!(matches!(torn, Err(e) if e.kind() == io::ErrorKind::UnexpectedEof));
}

#[test]
fn run_messages_round_trip() {
    let msg = ToWorker::Run {
        id: 9,
        task: "m::f".into(),
        seq: 100,
        args: vec![Bytes(vec![1, 2, 3]), Bytes(vec![])],
        max_nbytes: Some(1 << 20),
        chunked: false,
        packed: false,
        timed: true,
    };
    let wire = encode_frame(&msg).unwrap();
    let mut r = &wire[..];
    let back: ToWorker = decode_message(&read_frame(&mut r).unwrap().unwrap()).unwrap();
    let ToWorker::Run {
        id,
        task,
        seq,
        args,
        ..
    } = back
    else {
        panic!("not a run");
    };
    assert_eq!((id, task.as_str(), seq), (9, "m::f", 100));
    assert_eq!(args, vec![Bytes(vec![1, 2, 3]), Bytes(vec![])]);
    assert!(read_frame(&mut r).unwrap().is_none());
}

#[test]
fn bytes_are_encoded_as_one_string() {
    let big = Bytes(vec![7u8; 100_000]);
    let encoded = codec::encode(&big).unwrap();
    assert!(encoded.len() < 100_010, "{}", encoded.len());
    assert_eq!(codec::decode::<Bytes>(&encoded).unwrap(), big);
}

#[test]
fn torn_and_oversized_frames_are_errors() {
    let frame = encode_frame(&ToWorker::Run {
        id: 1,
        task: "t".into(),
        seq: 0,
        args: vec![Bytes(vec![0; 100])],
        max_nbytes: None,
        chunked: false,
        packed: false,
        timed: false,
    })
    .unwrap();
    let torn = &frame[..frame.len() - 10];
    assert_eq!(
        read_frame(&mut &torn[..]).unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
    let huge = (1u64 << 60).to_le_bytes();
    assert_eq!(
        read_frame(&mut &huge[..]).unwrap_err().kind(),
        io::ErrorKind::InvalidData
    );
}

#[test]
fn a_hello_from_another_build_is_refused_with_the_reason() {
    let ours = Hello::current();
    let mut theirs = ours.clone();
    theirs.protocol += 1;
    assert!(theirs
        .check(&ours)
        .unwrap_err()
        .contains("protocol version"));
    let mut theirs = ours.clone();
    theirs.fingerprint ^= 1;
    assert!(theirs.check(&ours).unwrap_err().contains("registry"));
}

#[test]
fn a_batchs_times_cross_before_its_end() {
    let mut wire = Vec::new();
    write_times(&mut wire, 4, 100, 7_000, &[7_010, 7_025]).unwrap();
    let mut r = &wire[..];
    let payload = read_frame(&mut r).unwrap().unwrap();
    assert_eq!(
        parse_from_worker(&payload).unwrap(),
        FromWorker::Times {
            batch: 4,
            seq: 100,
            start_ns: 7_000,
            ends: vec![7_010, 7_025],
        }
    );
    // It is not a batch's end.
    assert_eq!(done_batch(&payload), None);
}
