//! Grouping: accounts whose change is the same (the same action, summary and changed lines,
//! up to each account's own values such as its id or tenant) are shown once, with the
//! values written as the `${account.*}` variables they are.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::template::{Occurrence, Values, Vars, write_template};
use crate::plan::changes::Change;
use crate::plan::model::{AccountPlan, Action, Group};

/// How one position (an occurrence of some account's value) is written in a group: as the
/// text it is, the same in every account of the group, or as the variable whose value it
/// is in each of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Rep {
    Literal(usize),
    Variable(String),
}

/// The texts of one account's change, cut at the values found in them: the summary's
/// strings and the diff's lines, each with its occurrences.
struct Cut {
    /// Per change: the name's occurrences, then each detail's.
    changes: Vec<Vec<Vec<Occurrence>>>,
    /// Per diff line: its occurrences.
    lines: Vec<Vec<Occurrence>>,
}

impl Cut {
    fn new(values: &Values, changes: &[Change], diff: &str) -> Cut {
        Cut {
            changes: changes
                .iter()
                .map(|c| {
                    std::iter::once(&c.name)
                        .chain(&c.details)
                        .map(|t| values.find(t))
                        .collect()
                })
                .collect(),
            lines: diff.lines().map(|l| values.find(l)).collect(),
        }
    }
}

/// What grouping keeps of one account's change once its texts are cut: the forms (with
/// and without context lines) hashed, and the values at its positions. A few hundred bytes
/// however big the diff, so a plan of 10,000 creates does not hold 10,000 cut bundles.
struct Shape {
    /// The form without context lines: what a group is keyed on.
    key: [u8; 32],
    /// The form with context lines.
    full: [u8; 32],
    /// The values at the key positions (summary, then changed lines), in order.
    positions: Vec<usize>,
    /// The values found in context lines, in order.
    context: Vec<usize>,
}

impl Shape {
    fn of(values: &Values, a: &AccountPlan) -> Shape {
        let diff = a.diff.unpack();
        let cut = Cut::new(values, &a.changes, &diff);
        Shape {
            key: skeleton(a.action, &a.changes, &diff, &cut, false),
            full: skeleton(a.action, &a.changes, &diff, &cut, true),
            positions: key_positions(&diff, &cut),
            context: diff
                .lines()
                .zip(&cut.lines)
                .filter(|(l, _)| !is_changed_line(l))
                .flat_map(|(_, f)| f.iter().map(|o| o.value))
                .collect(),
        }
    }
}

/// Whether a diff line says what changes (hunk header, `+`, `-`) rather than giving context.
fn is_changed_line(line: &str) -> bool {
    !line.starts_with(' ')
}

/// The form of one account's change with every value found left out: what a group needs in
/// common (with the action). Hashed, so 1,000 creates (whole bundles) stay small. `context`
/// adds the diff's context lines.
fn skeleton(action: Action, changes: &[Change], diff: &str, cut: &Cut, context: bool) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    let mut piece = |text: &str, found: &[Occurrence]| {
        let mut at = 0;
        for o in found {
            h.update([0]);
            h.update(((o.start - at) as u64).to_le_bytes());
            h.update(&text.as_bytes()[at..o.start]);
            h.update([1]);
            at = o.end;
        }
        h.update([0]);
        h.update(((text.len() - at) as u64).to_le_bytes());
        h.update(&text.as_bytes()[at..]);
        h.update([2]);
    };
    piece(action.as_str(), &[]);
    for (c, found) in changes.iter().zip(&cut.changes) {
        piece(c.area.as_str(), &[]);
        piece(c.op.as_str(), &[]);
        piece(&c.details.len().to_string(), &[]);
        for (text, f) in std::iter::once(&c.name).chain(&c.details).zip(found) {
            piece(text, f);
        }
    }
    for (line, found) in diff.lines().zip(&cut.lines) {
        if context || is_changed_line(line) {
            piece(line, found);
        }
    }
    h.update([3]);
    h.finalize().into()
}

/// The values at the positions a group is keyed on (summary, then changed lines), in order.
fn key_positions(diff: &str, cut: &Cut) -> Vec<usize> {
    let changes = cut.changes.iter().flatten().flatten();
    let lines = diff
        .lines()
        .zip(&cut.lines)
        .filter(|(l, _)| is_changed_line(l))
        .flat_map(|(_, f)| f);
    changes.chain(lines).map(|o| o.value).collect()
}

/// Each account of `set` with the value it has at key position `p`.
fn column(shapes: &BTreeMap<usize, Shape>, set: &[usize], p: usize) -> Vec<(usize, usize)> {
    set.iter().map(|&i| (i, shapes[&i].positions[p])).collect()
}

/// Whether account `a` (with `vars`) has `rep` where its text holds value `value`.
fn supports(values: &Values, vars: &Vars, value: usize, rep: &Rep) -> bool {
    match rep {
        Rep::Literal(v) => *v == value,
        Rep::Variable(name) => vars
            .variables_with(values.value(value))
            .contains(&name.as_str()),
    }
}

/// The way of writing one position that the most of `accounts` (each with the value it has
/// there) support, among those `allowed`; a literal on a tie (a group whose accounts share a
/// value shows it), then the earliest account's, then the most specific variable.
fn best_rep(
    values: &Values,
    vars: &[Vars],
    accounts: &[(usize, usize)],
    allowed: &dyn Fn(&Rep) -> bool,
) -> Option<Rep> {
    // Per way of writing: how many accounts support it, and the first of them.
    let mut support: BTreeMap<Rep, (usize, usize)> = BTreeMap::new();
    for &(i, value) in accounts {
        let mut reps = vec![Rep::Literal(value)];
        reps.extend(
            vars[i]
                .variables_with(values.value(value))
                .into_iter()
                .map(|n| Rep::Variable(n.to_string())),
        );
        for rep in reps.into_iter().filter(|r| allowed(r)) {
            support.entry(rep).or_insert((0, i)).0 += 1;
        }
    }
    support
        .into_iter()
        .min_by(|(ra, (na, fa)), (rb, (nb, fb))| {
            let kind = |r: &Rep| match r {
                Rep::Literal(_) => 0,
                Rep::Variable(_) => 1,
            };
            (std::cmp::Reverse(*na), kind(ra), *fa)
                .cmp(&(std::cmp::Reverse(*nb), kind(rb), *fb))
                .then_with(|| match (ra, rb) {
                    (Rep::Variable(a), Rep::Variable(b)) => crate::config::template::specificity(a)
                        .cmp(&crate::config::template::specificity(b)),
                    _ => std::cmp::Ordering::Equal,
                })
        })
        .map(|(r, _)| r)
}

/// A group's members: each bucket of accounts whose change has the same form split into
/// sets whose values can be written the same way (a variable, or text they share), with
/// how each position is written.
fn split_buckets(
    buckets: BTreeMap<[u8; 32], Vec<usize>>,
    shapes: &BTreeMap<usize, Shape>,
    values: &Values,
    vars: &[Vars],
    accounts: &[AccountPlan],
) -> Vec<(Action, Vec<usize>, Vec<Rep>)> {
    let mut members: Vec<(Action, Vec<usize>, Vec<Rep>)> = Vec::new();
    for bucket in buckets.into_values() {
        let mut remaining = bucket;
        while let Some(&first) = remaining.first() {
            let mut set = remaining.clone();
            let mut reps = Vec::new();
            let count = shapes[&first].positions.len();
            for p in 0..count {
                let here = column(shapes, &set, p);
                // Every account supports its own text, so there is always a choice.
                let rep = best_rep(values, vars, &here, &|_| true)
                    .unwrap_or(Rep::Literal(shapes[&first].positions[p]));
                set.retain(|&i| supports(values, &vars[i], shapes[&i].positions[p], &rep));
                reps.push(rep);
            }
            // Decided again for the accounts that stayed: a position decided for a wider
            // set may be text they all share (every one of them supports the first choice,
            // so whatever wins now, all of them do).
            let reps: Vec<Rep> = (0..reps.len())
                .map(|p| {
                    let here = column(shapes, &set, p);
                    best_rep(values, vars, &here, &|_| true).unwrap_or_else(|| reps[p].clone())
                })
                .collect();
            let taken: BTreeSet<usize> = set.iter().copied().collect();
            remaining.retain(|i| !taken.contains(i));
            members.push((accounts[first].action, set, reps));
        }
    }
    members
}

/// Groups creates and updates whose changes are the same once each account's own values
/// (`${account.*}`: id, region, name, tenant, stage, labels) are written as variables, and
/// points each account at its group.
///
/// Every value of every planned account is found in each account's summary and changed diff
/// lines (whole tokens only, longest first). Accounts whose texts agree everywhere else are
/// candidates for one group. Then each position where a value was found is decided in turn,
/// by what the most remaining accounts have in common there: the same text (shown as it
/// is), or each its own value of one variable (shown as `${account.region}`); a tie goes to
/// the text. Accounts that do not fit a decision wait for the next group; the positions are
/// then decided again for the accounts that stayed. So a fleet-wide
/// rotation whose secret ARN holds each account's region and id is one group showing
/// `${account.region}:${account.id}`, while a value every account writes literally (a region
/// that is also some accounts' own, a stage word inside a host) stays text and splits no one.
///
/// Order: updates before creates, bigger groups first, then by first account.
pub(super) fn group(accounts: &mut [AccountPlan], vars: &[Vars]) -> Vec<Group> {
    let planned: Vec<usize> = (0..accounts.len())
        .filter(|&i| matches!(accounts[i].action, Action::Create | Action::Update))
        .collect();
    let values = Values::new(planned.iter().map(|&i| &vars[i]));
    // One account's texts at a time: unpacked, cut, reduced to their shape, dropped.
    let mut shapes: BTreeMap<usize, Shape> = BTreeMap::new();
    let mut buckets: BTreeMap<[u8; 32], Vec<usize>> = BTreeMap::new();
    for &i in &planned {
        let shape = Shape::of(&values, &accounts[i]);
        buckets.entry(shape.key).or_default().push(i);
        shapes.insert(i, shape);
    }

    let mut members = split_buckets(buckets, &shapes, &values, vars, accounts);
    members.sort_by(|(a, x, _), (b, y, _)| {
        let rank = |a: &Action| if *a == Action::Update { 0 } else { 1 };
        (rank(a), std::cmp::Reverse(x.len()), x[0]).cmp(&(
            rank(b),
            std::cmp::Reverse(y.len()),
            y[0],
        ))
    });
    let mut groups = Vec::with_capacity(members.len());
    for (g, (action, idx, reps)) in members.into_iter().enumerate() {
        let first = idx[0];
        let a = &accounts[first];
        let diff_text = a.diff.unpack();
        let cut = &Cut::new(&values, &a.changes, &diff_text);

        // Context lines are not what the group is keyed on: each of the first account's
        // values there is written the way most of the accounts whose diff has the same form
        // agree on; where one of them does not, the diff's context is the first account's.
        let full = shapes[&first].full;
        let aligned: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| shapes[&i].full == full)
            .collect();
        let mut context_differs = aligned.len() < idx.len();
        let mut line_reps: Vec<Vec<Rep>> = Vec::with_capacity(cut.lines.len());
        let mut next = cut.changes.iter().flatten().flatten().count();
        // Index into each aligned account's context values (they share the form, so the
        // same occurrence is at the same index in each).
        let mut at_context = 0;
        for (line, found) in diff_text.lines().zip(&cut.lines) {
            if is_changed_line(line) {
                line_reps.push(reps[next..next + found.len()].to_vec());
                next += found.len();
                continue;
            }
            let mut these = Vec::with_capacity(found.len());
            for o in found {
                let here: Vec<(usize, usize)> = aligned
                    .iter()
                    .map(|&i| (i, shapes[&i].context[at_context]))
                    .collect();
                at_context += 1;
                let own = |r: &Rep| supports(&values, &vars[first], o.value, r);
                let rep = best_rep(&values, vars, &here, &own).unwrap_or(Rep::Literal(o.value));
                context_differs |= here
                    .iter()
                    .any(|&(i, v)| !supports(&values, &vars[i], v, &rep));
                these.push(rep);
            }
            line_reps.push(these);
        }

        let templated = reps
            .iter()
            .chain(line_reps.iter().flatten())
            .any(|r| matches!(r, Rep::Variable(_)));
        let mut used: BTreeSet<String> = BTreeSet::new();
        let mut write = |text: &str, found: &[Occurrence], reps: &[Rep]| -> String {
            if !templated {
                return text.to_string();
            }
            for r in reps {
                if let Rep::Variable(name) = r {
                    used.insert(name.clone());
                }
            }
            write_template(text, found, &|k| match reps.get(k) {
                Some(Rep::Variable(name)) => Some(name.clone()),
                _ => None,
            })
        };
        let mut next = 0;
        let changes: Vec<Change> = a
            .changes
            .iter()
            .zip(&cut.changes)
            .map(|(c, found)| {
                let mut texts =
                    std::iter::once(&c.name)
                        .chain(&c.details)
                        .zip(found)
                        .map(|(t, f)| {
                            let out = write(t, f, &reps[next..next + f.len()]);
                            next += f.len();
                            out
                        });
                let name = texts.next().unwrap_or_default();
                Change {
                    area: c.area,
                    op: c.op,
                    name,
                    details: texts.collect(),
                }
            })
            .collect();
        let diff: String = diff_text
            .lines()
            .zip(&cut.lines)
            .zip(&line_reps)
            .flat_map(|((line, found), reps)| [write(line, found, reps), "\n".to_string()])
            .collect();
        groups.push(Group {
            action,
            accounts: idx.iter().map(|&i| accounts[i].name.clone()).collect(),
            changes,
            diff,
            context_from: context_differs.then(|| a.name.clone()),
            variables: used.into_iter().collect(),
        });
        for i in idx {
            accounts[i].group = Some(g);
        }
    }
    groups
}
