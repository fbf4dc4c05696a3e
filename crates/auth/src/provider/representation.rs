//! Legal representatives (a parent of a minor, the guardian of an adult under guardianship): a patient-realm
//! account acts, besides for its holder, for the persons it represents. The holder chooses at each
//! authorization whose record the application works on; the grant keeps that choice, its tokens carry the
//! represented person's `patient` with `representative: true`, and the policy engine decides as for a legal
//! representative (documents hidden from representatives stay hidden). Ending a representation revokes the
//! grants made under it at once.

use serde_json::{Map, Value};

use super::{Provider, int, opt_text, text};
use crate::{AuthError, Realm, now_ms};

/// A person an account represents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Represented {
    /// Their local `Patient` id.
    pub patient: String,
    /// Their INS (the registry matricule).
    pub ins: String,
    /// Their name, as shown on the choice page.
    pub name: String,
    /// Milliseconds since the epoch.
    pub since: i64,
}

impl Provider {
    /// The subject of a patient-realm account, by login.
    fn patient_subject(&self, login: &str) -> Result<(String, Map<String, Value>), AuthError> {
        let mut row = None;
        self.store.read(&mut |c| {
            row = c.query_one(
                "SELECT subject, profile FROM auth_accounts WHERE realm = ? AND login = ?",
                &[Realm::Patient.as_str().into(), login.into()],
            )?;
            Ok(())
        })?;
        let r =
            row.ok_or_else(|| AuthError::NotFound(format!("compte patient inconnu : {login}")))?;
        Ok((
            text(&r, 0),
            serde_json::from_str(&text(&r, 1)).unwrap_or_default(),
        ))
    }

    /// Records that the account `login` (realm patient) represents the person `ins` (local record `patient`).
    /// Already recorded: unchanged.
    pub fn add_representation(
        &self,
        login: &str,
        patient: &str,
        ins: &str,
        name: &str,
    ) -> Result<Represented, AuthError> {
        let (subject, profile) = self.patient_subject(login)?;
        if profile.get("patient").and_then(Value::as_str) == Some(patient) {
            return Err(AuthError::Invalid(
                "une personne ne se représente pas elle-même : ce dossier est celui du titulaire du compte".into(),
            ));
        }
        let now = now_ms();
        self.store.write(&mut |c| {
            c.execute(
                "INSERT INTO auth_representations (realm, subject, patient, ins, name, since) VALUES (?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (realm, subject, patient) DO NOTHING",
                &[
                    Realm::Patient.as_str().into(),
                    subject.as_str().into(),
                    patient.into(),
                    ins.into(),
                    name.into(),
                    now.into(),
                ],
            )?;
            Ok(())
        })?;
        self.representations(&subject)?
            .into_iter()
            .find(|r| r.patient == patient)
            .ok_or_else(|| AuthError::Internal("représentation non enregistrée".into()))
    }

    /// Ends the representation of the person `ins` by the account `login`, and revokes every grant (refresh and
    /// access tokens) made under it. Whether there was one.
    pub fn remove_representation(&self, login: &str, ins: &str) -> Result<bool, AuthError> {
        let (subject, _) = self.patient_subject(login)?;
        let mut grants = Vec::new();
        let mut n = 0;
        self.store.write(&mut |c| {
            grants = c.query(
                "SELECT g.grant_id FROM auth_grant_context g JOIN auth_representations r \
                 ON r.realm = ? AND r.subject = g.subject AND r.patient = g.patient \
                 WHERE g.subject = ? AND r.ins = ?",
                &[
                    Realm::Patient.as_str().into(),
                    subject.as_str().into(),
                    ins.into(),
                ],
            )?;
            n = c.execute(
                "DELETE FROM auth_representations WHERE realm = ? AND subject = ? AND ins = ?",
                &[
                    Realm::Patient.as_str().into(),
                    subject.as_str().into(),
                    ins.into(),
                ],
            )?;
            Ok(())
        })?;
        for g in &grants {
            self.revoke_grant(&text(g, 0))?;
        }
        Ok(n > 0)
    }

    /// The persons the account `subject` (realm patient) represents, oldest first.
    pub fn representations(&self, subject: &str) -> Result<Vec<Represented>, AuthError> {
        let mut rows = Vec::new();
        self.store.read(&mut |c| {
            rows = c.query(
                "SELECT patient, ins, name, since FROM auth_representations WHERE realm = ? AND subject = ? \
                 ORDER BY since, patient",
                &[Realm::Patient.as_str().into(), subject.into()],
            )?;
            Ok(())
        })?;
        Ok(rows
            .iter()
            .map(|r| Represented {
                patient: text(r, 0),
                ins: text(r, 1),
                name: text(r, 2),
                since: int(r, 3),
            })
            .collect())
    }

    /// The representations of the account `login`, for the administration CLI.
    pub fn representations_of_login(&self, login: &str) -> Result<Vec<Represented>, AuthError> {
        let (subject, _) = self.patient_subject(login)?;
        self.representations(&subject)
    }

    /// The person a grant acts for, when its holder acts as a legal representative: `Ok(None)` for the holder's
    /// own record; an error when the representation has ended since.
    pub(super) fn grant_context(&self, grant: &str) -> Result<Option<Represented>, AuthError> {
        let mut row = None;
        self.store.read(&mut |c| {
            row = c.query_one(
                "SELECT g.patient, r.ins, r.name, r.since FROM auth_grant_context g LEFT JOIN auth_representations r \
                 ON r.realm = ? AND r.subject = g.subject AND r.patient = g.patient WHERE g.grant_id = ?",
                &[Realm::Patient.as_str().into(), grant.into()],
            )?;
            Ok(())
        })?;
        match row {
            None => Ok(None),
            Some(r) if opt_text(&r, 1).is_some() => Ok(Some(Represented {
                patient: text(&r, 0),
                ins: text(&r, 1),
                name: text(&r, 2),
                since: int(&r, 3),
            })),
            Some(_) => Err(AuthError::NotFound(
                "la représentation légale sous laquelle cet accès a été donné a pris fin".into(),
            )),
        }
    }
}
