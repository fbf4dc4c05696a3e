//! The CapabilityStatement: exactly what this server supports, generated from the registry.

use serde_json::{Value, json};
use socle_fhir::search_params::{ParamType, registry};

fn search_params(rtype: &str) -> Vec<Value> {
    let mut v = vec![
        json!({"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"}),
        json!({"name": "_lastUpdated", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"}),
    ];
    for p in registry().params(rtype) {
        if p.expression.is_none()
            || p.kind == ParamType::Special
            || p.code == "_id"
            || p.code == "_lastUpdated"
            || p.code == socle_store::search::UNSUPPORTED_PHONETIC
        {
            continue;
        }
        v.push(json!({"name": p.code, "type": p.kind.as_str(), "definition": p.url}));
    }
    v
}

/// The CapabilityStatement as JSON bytes (built once at start-up).
/// `public_url`: `http://host:port` of this server (the OAuth endpoints of the security section).
pub fn capability_statement(public_url: &str) -> Vec<u8> {
    let reg = registry();
    let mut resources = Vec::new();
    for rtype in reg.resource_types() {
        let refs: Vec<String> = reg
            .params(rtype)
            .filter(|p| p.kind == ParamType::Reference && p.expression.is_some())
            .map(|p| format!("{rtype}:{}", p.code))
            .collect();
        let revs: Vec<String> = reg
            .resource_types()
            .flat_map(|src| {
                reg.params(src)
                    .filter(move |p| {
                        p.kind == ParamType::Reference
                            && p.expression.is_some()
                            && (p.targets.iter().any(|t| t == rtype || t == "Resource"))
                    })
                    .map(move |p| format!("{src}:{}", p.code))
            })
            .collect();
        let interactions: Vec<Value> = [
            "read",
            "vread",
            "update",
            "delete",
            "history-instance",
            "history-type",
            "create",
            "search-type",
        ]
        .iter()
        .map(|c| json!({"code": c}))
        .collect();
        let mut r = json!({
            "type": rtype,
            "profile": format!("http://hl7.org/fhir/StructureDefinition/{rtype}"),
            "interaction": interactions,
            "versioning": "versioned",
            "readHistory": true,
            "updateCreate": true,
            "conditionalCreate": true,
            "conditionalRead": "full-support",
            "conditionalUpdate": true,
            "conditionalDelete": "single",
            "searchParam": search_params(rtype),
        });
        if rtype == "Patient" {
            r["operation"] = json!([
                {"name": "everything", "definition": "urn:socle:OperationDefinition:everything",
                 "documentation": "Dossier complet : GET [base]/Patient/[id]/$everything (_since, _type, _count ; pages par le lien next) — le patient et les ressources de son compartiment, dans l'ordre de leur première écriture ; pour un utilisateur, chacune décidée comme une lecture (documents masqués ou invisibles omis). start et end ne sont pas pris en charge (400). Définition : GET [base]/OperationDefinition/everything (base : Patient-everything de HL7)."},
                {"name": "ins-retrieve", "definition": "urn:socle:OperationDefinition:ins-retrieve",
                 "documentation": "Téléservice INSi, récupération : POST [base]/Patient/$ins-retrieve (Parameters). Définition : GET [base]/OperationDefinition/ins-retrieve."},
                {"name": "ins-verify", "definition": "urn:socle:OperationDefinition:ins-verify",
                 "documentation": "Téléservice INSi, vérification : POST [base]/Patient/$ins-verify (Parameters). Définition : GET [base]/OperationDefinition/ins-verify."},
                {"name": "duplicates", "definition": "urn:socle:OperationDefinition:duplicates",
                 "documentation": "Identitovigilance : GET [base]/Patient/[id]/$duplicates — doublons (mêmes cinq traits) et homonymes (nés ailleurs), en Parameters (duplicate, homonym). Définition : GET [base]/OperationDefinition/duplicates."},
                {"name": "merge", "definition": "urn:socle:OperationDefinition:merge",
                 "documentation": "Identitovigilance : POST [base]/Patient/$merge (Parameters source-patient, target-patient) — le dossier source est désactivé et lié (replaced-by) au dossier cible (replaces), en une transaction tracée. Définition : GET [base]/OperationDefinition/merge."}
            ]);
        }
        if !refs.is_empty() {
            // Wildcards: every reference parameter of the type.
            let mut refs = refs;
            refs.extend(["*".to_string(), format!("{rtype}:*")]);
            r["searchInclude"] = json!(refs);
        }
        if !revs.is_empty() {
            r["searchRevInclude"] = json!(revs);
        }
        resources.push(r);
    }
    let cs = json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-26",
        "publisher": "Socle",
        "kind": "instance",
        "software": {"name": "Socle", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Socle — serveur FHIR R4 (SQLite embarqué ou PostgreSQL)"},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Recherche : modificateurs :exact, :contains (chaînes), :not, :in, :not-in, :of-type et :text (jetons ; :of-type : type-système|type-code|valeur d'un Identifier ; :in/:not-in : les codes d'un ValueSet stocké, par son URL canonique — URL|version pour choisir —, développé d'après son expansion ou sa composition explicite ; :text : le texte du CodeableConcept, le display des Coding, le type.text des Identifier, cherchés par leur début comme une chaîne), :missing, :Type et :identifier (références), :below et :above (URI, par segments entiers) ; préfixes eq ne gt lt ge le sa eb ap ; chaînage à un niveau ; _has à un niveau ; _include/_revinclude (:iterate ; jokers _include=*, Type:*) ; _sort, _count, _total, _summary=count, _elements ; recherche dans le compartiment d'un patient : GET [base]/Patient/[id]/[type]?… (les ressources qui le désignent par les paramètres du compartiment). Paramètres inconnus ou mal formés : ignorés avec un avertissement dans le Bundle, 400 avec Prefer: handling=strict (un curseur de pagination altéré est toujours refusé).",
            "security": {
                "cors": false,
                "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "SMART-on-FHIR"}]}],
                "description": format!("Jeton d'accès (Bearer, JWT) exigé sauf pour metadata et l'Annuaire public (Practitioner, PractitionerRole, Organization, HealthcareService, Location, Endpoint). Émetteurs OpenID Connect : {public_url}/auth/pro (professionnels, portées user/ et system/) et {public_url}/auth/patient (patients, portées patient/) ; portées SMART v2 ; acr minimal eidas1, eidas2 pour les suppressions et Patient/$merge."),
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [
                        {"url": "authorize", "valueUri": format!("{public_url}/auth/pro/authorize")},
                        {"url": "token", "valueUri": format!("{public_url}/auth/pro/token")},
                        {"url": "revoke", "valueUri": format!("{public_url}/auth/pro/revoke")},
                        {"url": "introspect", "valueUri": format!("{public_url}/auth/pro/introspect")},
                    ],
                }],
            },
            "resource": resources,
            "compartment": ["http://hl7.org/fhir/CompartmentDefinition/patient"],
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            "operation": [{
                "name": "audit-trail",
                "definition": "https://socle.example/fhir/OperationDefinition/audit-trail",
                "documentation": "Journal d'audit de Socle (chaîné, append-only), en AuditEvent (IHE BALP), du plus récent au plus ancien : GET [base]/$audit-trail?patient=&date=&_count= et GET [base]/Patient/[id]/$audit-trail?date=&_count= (date répétable, préfixes eq ge gt le lt sa eb ; page suivante par le lien next). Pour un jeton patient, GET [base]/AuditEvent?[patient=][&date=][&_count=] est cette trace, limitée à son propre dossier ; les autres recherches d'AuditEvent portent sur les AuditEvent stockés.",
            }],
        }],
    });
    serde_json::to_vec(&cs).unwrap_or_default()
}
