//! A database written before the name vocabulary existed gets it at the next open, and `:contains` then
//! finds the names it already held.

use serde_json::json;
use socle_store::{Repository, RequestContext, SqlValue};

fn count(store: &dyn socle_store::Store, sql: &str) -> i64 {
    let mut n = 0;
    store
        .read(&mut |c| {
            n = c
                .query_one(sql, &[])?
                .and_then(|r| r.into_iter().next())
                .and_then(|v| v.as_i64())
                .unwrap_or(-1);
            Ok(())
        })
        .expect("lecture");
    n
}

fn contains(repo: &Repository, ctx: &RequestContext, text: &str) -> Vec<String> {
    let params = vec![("family:contains".to_string(), text.to_string())];
    let page = repo
        .search(ctx, "Patient", &params, true)
        .expect("recherche");
    let mut ids: Vec<String> = page.matches.iter().map(|s| s.id.clone()).collect();
    ids.sort();
    ids
}

#[test]
fn vocabulary_is_built_for_existing_data() {
    let dir = tempfile::tempdir().expect("répertoire temporaire");
    let ctx = RequestContext {
        principal: "test".into(),
        client: None,
        base_url: "http://localhost/fhir".into(),
    };
    {
        let store = socle_store::open(None, dir.path()).expect("ouverture");
        let repo = Repository::new(store.clone());
        for (id, family) in [("a", "Dupont"), ("b", "Ledupont"), ("c", "Martin")] {
            repo.update(
                &ctx,
                "Patient",
                id,
                json!({"resourceType": "Patient", "id": id, "name": [{"family": family}]}),
                None,
            )
            .expect("écriture");
        }
        assert!(count(store.as_ref(), "SELECT COUNT(*) FROM str_trigram") > 0);
        // Back to the state of a database from before the vocabulary.
        store
            .write(&mut |c| {
                c.execute("DELETE FROM str_trigram", &[])?;
                c.execute("DELETE FROM str_vocab", &[])?;
                c.execute(
                    "DELETE FROM socle_meta WHERE name = ?",
                    &[SqlValue::from("string_vocabulary")],
                )?;
                Ok(())
            })
            .expect("remise à zéro");
        assert!(contains(&repo, &ctx, "upon").is_empty());
        repo.flush_audit();
    }
    let store = socle_store::open(None, dir.path()).expect("réouverture");
    let repo = Repository::new(store.clone());
    assert_eq!(
        count(
            store.as_ref(),
            "SELECT COUNT(*) FROM str_vocab WHERE param = 'family'"
        ),
        3
    );
    assert_eq!(contains(&repo, &ctx, "upon"), ["a", "b"]);
    assert_eq!(contains(&repo, &ctx, "ar"), ["c"]);
}
