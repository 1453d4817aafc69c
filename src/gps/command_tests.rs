use super::*;

fn hub(per_device: usize, max: usize, timeout_ms: u64, ttl_ms: u64) -> Arc<Commands> {
    Arc::new(Commands::new(&crate::gps::GpsConfig {
        commands_per_device: per_device,
        commands_max: max,
        command_timeout: Duration::from_millis(timeout_ms),
        command_ttl: Duration::from_millis(ttl_ms),
        ..crate::gps::GpsConfig::default()
    }))
}

#[tokio::test]
async fn offline_commands_wait_for_the_device_and_are_bounded() {
    let h = hub(2, 3, 60_000, 60_000);
    let (a, online) = h.submit("d1", Kind::Locate, None).expect("first");
    assert!(!online);
    h.submit("d1", Kind::Locate, None).expect("second");
    assert_eq!(
        h.submit("d1", Kind::Locate, None).err(),
        Some(Refused::Full("gps.commands_per_device"))
    );
    h.submit("d2", Kind::Locate, None).expect("third");
    assert_eq!(
        h.submit("d3", Kind::Locate, None).err(),
        Some(Refused::Full("gps.commands_max"))
    );
    assert_eq!((h.counted("queued"), h.counted("refused")), (3, 2));
    // NMEA has no commands: refused up front when the registry knows the protocol.
    assert_eq!(
        h.submit("d4", Kind::Locate, Some(Protocol::Nmea)).err(),
        Some(Refused::Unsupported(Protocol::Nmea))
    );

    let mut conn = h.attach("d1", 1);
    let got = conn.rx.try_recv().expect("waiting command handed over");
    assert!(Arc::ptr_eq(&got, &a));
    // Taken but never sent when the connection closes: it waits again.
    h.detach("d1", conn);
    let mut again = h.attach("d1", 2);
    assert!(again.rx.try_recv().is_ok());
    h.sent(&got, Protocol::Gt06);
    h.finish(&got, Status::Answered, Some("ok".into()));
    h.finish(&got, Status::NoAnswer, None);
    // While connected, a new command goes straight to the connection.
    let (_, online) = h.submit("d1", Kind::Locate, None).expect("online");
    assert!(online);
    let r = got.record();
    assert_eq!(
        (r.status, r.answer.as_deref()),
        (Status::Answered, Some("ok"))
    );
    assert_eq!((h.counted("answered"), h.counted("no_answer")), (1, 0));
    assert_eq!(h.list("d1").len(), 3);
}

#[tokio::test]
async fn sent_commands_time_out_and_offline_ones_expire() {
    let h = hub(4, 10, 50, 80);
    let _conn = h.attach("on", 1);
    let (c, online) = h.submit("on", Kind::Locate, None).expect("submit");
    assert!(online);
    h.sent(&c, Protocol::H02);
    let r = c.wait(Duration::from_secs(5)).await;
    assert_eq!(r.status, Status::NoAnswer);
    let (e, _) = h.submit("off", Kind::Locate, None).expect("submit");
    let r = e.wait(Duration::from_secs(5)).await;
    assert_eq!(r.status, Status::Expired);
    assert_eq!((h.counted("no_answer"), h.counted("expired")), (1, 1));
    assert_eq!(h.live(), 0);
    // An expired command is no longer handed to the device when it connects.
    let mut late = h.attach("off", 2);
    assert!(late.rx.try_recv().is_err());
}

#[tokio::test]
async fn osmand_devices_get_custom_text_in_the_answer() {
    let h = hub(4, 10, 1000, 60_000);
    let (c, _) = h
        .submit(
            "phone",
            Kind::Custom {
                text: "hello".into(),
            },
            None,
        )
        .expect("submit");
    assert_eq!(h.http_text("phone").as_deref(), Some("hello"));
    assert_eq!(c.record().status, Status::Answered);
    assert_eq!(h.http_text("phone"), None);
}
