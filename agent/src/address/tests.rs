use super::*;

fn net(text: &str) -> IpNet {
    text.parse().expect("test literal")
}

fn declared(
    address: &str,
    interface: &str,
    label: Option<&str>,
    state: Presence,
) -> ServiceAddress {
    ServiceAddress {
        address: net(address),
        interface: interface.into(),
        label: label.map(Into::into),
        state,
        exclusive: false,
    }
}

fn link(index: u32) -> Link {
    Link {
        index,
        mac: Some([2, 0, 0, 0, 0, index as u8]),
        up: true,
        noarp: false,
        promote_secondaries: false,
    }
}

fn on_host(
    interface: &str,
    address: &str,
    label: Option<&str>,
    secondary: bool,
) -> ObservedAddress {
    ObservedAddress {
        interface: interface.into(),
        address: net(address),
        label: label.map(Into::into),
        secondary,
        tentative: false,
        dad_failed: false,
    }
}

fn host(addresses: Vec<ObservedAddress>) -> ObservedAddresses {
    ObservedAddresses {
        links: [("eth0".to_owned(), link(2)), ("eth1".to_owned(), link(3))].into(),
        addresses,
    }
}

#[test]
fn adds_a_missing_address_with_its_label() {
    let desired = [declared(
        "192.0.2.25/24",
        "eth0",
        Some("eth0:mail"),
        Presence::Present,
    )];
    let changes = diff(&desired, &host(vec![])).expect("plan");
    assert_eq!(
        changes,
        [AddressChange::Add {
            address: net("192.0.2.25/24"),
            interface: "eth0".into(),
            label: Some("eth0:mail".into()),
            exclusive: false,
        }]
    );
    assert_eq!(
        changes[0].to_string(),
        "+ address 192.0.2.25/24 on eth0 (label eth0:mail)"
    );
}

#[test]
fn present_as_declared_needs_nothing() {
    let desired = [
        declared("192.0.2.25/24", "eth0", None, Presence::Present),
        declared(
            "192.0.2.26/24",
            "eth0",
            Some("eth0:mail"),
            Presence::Present,
        ),
        declared("2001:db8::25/64", "eth0", None, Presence::Present),
    ];
    let observed = host(vec![
        on_host("eth0", "192.0.2.25/24", Some("eth0"), true),
        on_host("eth0", "192.0.2.26/24", Some("eth0:mail"), true),
        on_host("eth0", "2001:db8::25/64", None, false),
    ]);
    assert_eq!(diff(&desired, &observed).expect("plan"), []);
}

#[test]
fn unlisted_addresses_and_other_interfaces_are_left_alone() {
    let desired = [
        declared("192.0.2.25/24", "eth0", None, Presence::Absent),
        declared("192.0.2.30/24", "eth0", None, Presence::Present),
    ];
    let observed = host(vec![
        on_host("eth0", "192.0.2.11/24", Some("eth0"), false),
        on_host("eth0", "192.0.2.30/24", Some("eth0"), true),
        on_host("eth1", "192.0.2.25/24", Some("eth1"), false),
    ]);
    assert_eq!(diff(&desired, &observed).expect("plan"), []);
}

#[test]
fn removes_an_absent_address_whatever_its_prefix() {
    let desired = [declared("192.0.2.25/24", "eth0", None, Presence::Absent)];
    let observed = host(vec![
        on_host("eth0", "192.0.2.11/24", Some("eth0"), false),
        on_host("eth0", "192.0.2.25/32", Some("eth0"), false),
    ]);
    let changes = diff(&desired, &observed).expect("plan");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].to_string(), "- address 192.0.2.25/32 on eth0");
}

#[test]
fn replaces_a_declared_ip_with_another_prefix_or_label() {
    let desired = [
        declared(
            "192.0.2.25/24",
            "eth0",
            Some("eth0:mail"),
            Presence::Present,
        ),
        declared("2001:db8::25/64", "eth0", None, Presence::Present),
    ];
    let observed = host(vec![
        on_host("eth0", "192.0.2.11/24", Some("eth0"), false),
        on_host("eth0", "192.0.2.25/24", Some("eth0"), true),
        on_host("eth0", "2001:db8::25/128", None, false),
    ]);
    let lines: Vec<String> = diff(&desired, &observed)
        .expect("plan")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "~ address 192.0.2.25/24 on eth0: label eth0 -> eth0:mail",
            "~ address 2001:db8::25/64 on eth0: prefix /128 -> /64",
        ]
    );
}

#[test]
fn re_adds_an_address_that_failed_duplicate_detection() {
    let desired = [declared("2001:db8::25/64", "eth0", None, Presence::Present)];
    let mut failed = on_host("eth0", "2001:db8::25/64", None, false);
    failed.dad_failed = true;
    let changes = diff(&desired, &host(vec![failed])).expect("plan");
    assert_eq!(
        changes[0].to_string(),
        "~ address 2001:db8::25/64 on eth0: duplicate address detection failed, add again"
    );
}

#[test]
fn a_missing_interface_is_an_error_only_for_present_addresses() {
    let absent = [declared("192.0.2.25/24", "eth9", None, Presence::Absent)];
    assert_eq!(diff(&absent, &host(vec![])).expect("plan"), []);

    let present = [declared("192.0.2.25/24", "eth9", None, Presence::Present)];
    let err = diff(&present, &host(vec![])).expect_err("no eth9");
    assert!(matches!(err, AddressError::NoSuchInterface { .. }), "{err}");
    assert!(err.to_string().contains("no interface eth9"), "{err}");
}

#[test]
fn refuses_to_remove_a_primary_that_would_take_unlisted_secondaries() {
    let desired = [declared("192.0.2.11/24", "eth0", None, Presence::Absent)];
    let observed = host(vec![
        on_host("eth0", "192.0.2.11/24", Some("eth0"), false),
        on_host("eth0", "192.0.2.12/24", Some("eth0"), true),
        on_host("eth0", "198.51.100.1/24", Some("eth0"), true),
    ]);
    let err = diff(&desired, &observed).expect_err("collateral removal");
    match &err {
        AddressError::WouldRemoveSecondaries { secondaries, .. } => {
            assert_eq!(secondaries, &[net("192.0.2.12/24")]);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("promote_secondaries"), "{err}");

    // Declaring the secondary absent too, or promoting, makes it safe.
    let both = [
        declared("192.0.2.11/24", "eth0", None, Presence::Absent),
        declared("192.0.2.12/24", "eth0", None, Presence::Absent),
    ];
    assert_eq!(diff(&both, &observed).expect("plan").len(), 2);
    let mut promoting = observed.clone();
    promoting.links.insert(
        "eth0".into(),
        Link {
            promote_secondaries: true,
            ..link(2)
        },
    );
    assert_eq!(diff(&desired, &promoting).expect("plan").len(), 1);
}

#[test]
fn subjects_identify_the_ip_on_its_interface() {
    let add = AddressChange::Add {
        address: net("192.0.2.25/24"),
        interface: "eth0".into(),
        label: None,
        exclusive: false,
    };
    let replace = AddressChange::Replace {
        interface: "eth0".into(),
        from: net("192.0.2.25/32"),
        from_label: None,
        to: net("192.0.2.25/24"),
        to_label: None,
        dad_failed: false,
    };
    assert_eq!(add.subject(), replace.subject());
}
