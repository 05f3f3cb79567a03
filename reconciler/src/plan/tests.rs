use super::*;

/// An update of `name` whose diff replaces `old` by `new` under one route.
fn update(name: &str, change: &str, old: &str, new: &str) -> AccountPlan {
    AccountPlan {
        name: name.into(),
        account_id: String::new(),
        action: Action::Update,
        from: None,
        to: String::new(),
        deployed_commit: None,
        note: None,
        error: None,
        group: None,
        changes: vec![Change {
            area: Area::Route,
            op: Op::Changed,
            name: change.into(),
            details: vec!["upstreamPath: changed".into()],
        }],
        diff: format!(
            "@@ gateway.routes[{change}] @@\n   \"{change}\": {{\n-  \"{old}\"\n+  \"{new}\"\n"
        ),
    }
}

fn vars(name: &str, id: &str, region: &str, tenant: &str) -> Vars {
    Vars::for_account(name, id, region, "prod", tenant, &BTreeMap::new())
}

#[test]
fn an_account_named_like_a_word_of_the_change_groups_with_the_rest() {
    // `orders` is an account's name and a route of every account.
    let mut accounts = vec![
        update(
            "billing",
            "orders.list",
            "/v1/111111111111",
            "/v2/111111111111",
        ),
        update(
            "orders",
            "orders.list",
            "/v1/222222222222",
            "/v2/222222222222",
        ),
        update(
            "shipping",
            "orders.list",
            "/v1/333333333333",
            "/v2/333333333333",
        ),
    ];
    let v = [
        vars("billing", "111111111111", "us-east-1", "b"),
        vars("orders", "222222222222", "eu-west-1", "o"),
        vars("shipping", "333333333333", "us-east-1", "s"),
    ];
    let groups = group(&mut accounts, &v);
    assert_eq!(groups.len(), 1, "{groups:#?}");
    let g = &groups[0];
    assert_eq!(g.accounts, ["billing", "orders", "shipping"]);
    assert_eq!(g.variables, ["account.id"]);
    assert_eq!(g.changes[0].name, "orders.list");
    assert!(g.diff.contains("+  \"/v2/${account.id}\""), "{}", g.diff);
    assert!(g.diff.contains("routes[orders.list]"), "{}", g.diff);
    assert!(g.context_from.is_none());
    assert!(accounts.iter().all(|a| a.group == Some(0)));
    assert!(
        accounts[1].diff.contains("/v2/222222222222"),
        "accounts stay literal"
    );
}

#[test]
fn a_value_two_variables_share_is_written_as_the_one_the_group_shares() {
    // acme's name is also its tenant; the others' texts hold their tenant.
    let mut accounts = vec![
        update(
            "acme",
            "r",
            "https://acme.example/a",
            "https://acme.example/b",
        ),
        update(
            "globex-prod",
            "r",
            "https://globex.example/a",
            "https://globex.example/b",
        ),
        update(
            "hooli-prod",
            "r",
            "https://hooli.example/a",
            "https://hooli.example/b",
        ),
    ];
    let v = [
        vars("acme", "111111111111", "us-east-1", "acme"),
        vars("globex-prod", "222222222222", "us-east-1", "globex"),
        vars("hooli-prod", "333333333333", "us-east-1", "hooli"),
    ];
    let groups = group(&mut accounts, &v);
    assert_eq!(groups.len(), 1, "{groups:#?}");
    assert_eq!(groups[0].variables, ["account.tenant"]);
    assert!(
        groups[0]
            .diff
            .contains("+  \"https://${account.tenant}.example/b\""),
        "{}",
        groups[0].diff
    );
}

#[test]
fn different_changes_split_and_single_accounts_show_their_text() {
    let mut accounts = vec![
        update("a1", "r", "/x/111111111111", "/y/111111111111"),
        update("a2", "r", "/x/222222222222", "/z/222222222222"),
    ];
    let v = [
        vars("a1", "111111111111", "us-east-1", "t1"),
        vars("a2", "222222222222", "us-east-1", "t2"),
    ];
    let groups = group(&mut accounts, &v);
    assert_eq!(groups.len(), 2, "{groups:#?}");
    for g in &groups {
        assert!(g.variables.is_empty(), "{g:#?}");
        assert!(!g.diff.contains("${"), "{}", g.diff);
    }
}

#[test]
fn accounts_naming_each_others_ids_are_each_their_own_group() {
    let n = 300;
    let id = |i: usize| format!("{:012}", 100_000_000_000 + i);
    let mut accounts: Vec<AccountPlan> = (0..n)
        .map(|i| {
            let peer = id((i + 1) % n);
            update(
                &format!("a{i:03}"),
                "r",
                &format!("/old/{peer}"),
                &format!("/new/{peer}"),
            )
        })
        .collect();
    let v: Vec<Vars> = (0..n)
        .map(|i| vars(&format!("a{i:03}"), &id(i), "us-east-1", &format!("t{i}")))
        .collect();
    let groups = group(&mut accounts, &v);
    assert_eq!(groups.len(), n);
    assert!(
        groups
            .iter()
            .all(|g| g.accounts.len() == 1 && g.variables.is_empty())
    );
    assert_eq!(groups[0].accounts, ["a000"], "by first account");
    assert!(groups[0].diff.contains(&id(1)), "{}", groups[0].diff);
}
