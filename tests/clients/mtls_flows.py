"""Mutual-TLS client authentication (RFC 8705) against a running Socle served over HTTPS, with Python `requests`
(OpenSSL underneath) as an establishment's software would use it: the server's certificate checked against the
test authority, client certificates presented or not, tokens bound to the certificate.

Usage: python3 mtls_flows.py ROOT PKI_DIR PKI_CLIENT DN_CLIENT SELF_CLIENT SECRET_ID SECRET
PKI_DIR holds ca.pem, server.pem and, for each client certificate NAME, NAME.pem and NAME.key: client (issued
by the authority to the registered subject), other (same authority, another subject), revoked (the registered
subject, revoked in ca.crl), rogue (the registered subject, from an unknown authority), selfsigned.
Run by crates/server/tests/mtls.rs, which makes the certificates, starts the server and registers the clients.
"""
import base64
import hashlib
import json
import ssl
import sys

import requests

ROOT, PKI, PKI_CLIENT, DN_CLIENT, SELF_CLIENT, SECRET_ID, SECRET = sys.argv[1:8]
# "revoked-later": only check that the client's certificate, revoked since, is refused.
LATER = sys.argv[8:9] == ["revoked-later"]
ISS = f"{ROOT}/auth/pro"
CA = f"{PKI}/ca.pem"
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        print(f"ÉCHEC : {what}", file=sys.stderr)
        sys.exit(1)


def cert(name):
    return (f"{PKI}/{name}.pem", f"{PKI}/{name}.key")


def thumbprint(name):
    with open(f"{PKI}/{name}.pem") as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def claims(jwt):
    body = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def token(client_id, name=None, **extra):
    data = {"grant_type": "client_credentials", "scope": "system/Patient.rs", "client_id": client_id}
    data.update(extra)
    return requests.post(f"{ISS}/token", data=data, verify=CA, cert=cert(name) if name else None)


def fhir(tok, name=None):
    return requests.get(f"{ROOT}/fhir/Patient?_count=1", headers={"Authorization": f"Bearer {tok}"},
                        verify=CA, cert=cert(name) if name else None)


if LATER:
    r = token(PKI_CLIENT, "client")
    check(r.status_code == 401 and r.json().get("error") == "invalid_client",
          f"certificat révoqué après le démarrage : {r.status_code} {r.text}")
    check(token(SELF_CLIENT, "selfsigned").status_code == 200, "client autosigné non concerné")
    print(f"révocation relue : {checks} vérifications réussies")
    sys.exit(0)

# The server's certificate is checked against the test authority (a client trusting nobody refuses it).
try:
    requests.get(f"{ROOT}/health", timeout=10)
    check(False, "certificat du serveur accepté sans l'autorité de test")
except requests.exceptions.SSLError:
    pass
r = requests.get(f"{ROOT}/health", verify=CA)
check(r.status_code == 200, f"/health en HTTPS : {r.status_code}")
# Plain HTTP on the HTTPS port gets no answer.
try:
    requests.get(ROOT.replace("https://", "http://") + "/health", timeout=10)
    check(False, "HTTP en clair accepté sur le port HTTPS")
except requests.exceptions.RequestException:
    pass

disc = requests.get(f"{ISS}/.well-known/openid-configuration", verify=CA).json()
check(disc["issuer"] == ISS, f"émetteur : {disc['issuer']}")
check(disc["token_endpoint"].startswith("https://"), "point de jeton en https")
for m in ["tls_client_auth", "self_signed_tls_client_auth"]:
    check(m in disc["token_endpoint_auth_methods_supported"], f"{m} annoncé")
check(disc["tls_client_certificate_bound_access_tokens"] is True, "jetons liés au certificat annoncés")

# tls_client_auth: the authority's certificate for the registered subject.
r = token(PKI_CLIENT, "client")
check(r.status_code == 200, f"tls_client_auth : {r.status_code} {r.text}")
at = r.json()["access_token"]
c = claims(at)
check(c["cnf"]["x5t#S256"] == thumbprint("client"), f"cnf du jeton : {c.get('cnf')}")
check(c["client_id"] == PKI_CLIENT, "client_id du jeton")
# The same subject registered in RFC 4514 order (reversed).
r = token(DN_CLIENT, "client")
check(r.status_code == 200, f"sujet enregistré dans l'ordre RFC 4514 : {r.status_code} {r.text}")

# The bound token: accepted with the same certificate only.
r = fhir(at, "client")
check(r.status_code == 200, f"jeton lié + même certificat : {r.status_code} {r.text}")
r = fhir(at)
check(r.status_code == 401, f"jeton lié sans certificat : {r.status_code}")
check("invalid_token" in r.headers.get("WWW-Authenticate", ""), "WWW-Authenticate invalid_token")
check("certificat" in r.text, f"raison nommée : {r.text}")
r = fhir(at, "other")
check(r.status_code == 401, f"jeton lié + autre certificat : {r.status_code}")
r = fhir(at, "selfsigned")
check(r.status_code == 401, f"jeton lié + certificat autosigné : {r.status_code}")

# Refusals, each with invalid_client and its reason.
def refused(resp, reason, what):
    check(resp.status_code == 401, f"{what} : {resp.status_code} {resp.text}")
    body = resp.json()
    check(body.get("error") == "invalid_client", f"{what} : {body}")
    check(reason in body.get("error_description", ""), f"{what} : raison « {reason} » attendue, {body}")


refused(token(PKI_CLIENT), "certificat client absent", "sans certificat")
refused(token(PKI_CLIENT, "rogue"), "non reconnu", "même sujet, autorité inconnue")
refused(token(PKI_CLIENT, "revoked"), "non reconnu", "certificat révoqué")
refused(token(PKI_CLIENT, "other"), "n'est pas celui enregistré", "autre sujet de la même autorité")
refused(token(PKI_CLIENT, "selfsigned"), "non reconnu", "certificat autosigné pour tls_client_auth")
refused(token(SELF_CLIENT, "client"), "non enregistré", "autre certificat pour le client autosigné")
refused(token(SELF_CLIENT), "certificat client absent", "client autosigné sans certificat")
# A secret does not stand in for the certificate.
r = requests.post(f"{ISS}/token", data={"grant_type": "client_credentials", "scope": "system/Patient.rs"},
                  auth=(PKI_CLIENT, "secret-inventé"), verify=CA, cert=cert("client"))
check(r.status_code == 401 and r.json()["error"] == "invalid_client", f"secret pour un client mTLS : {r.text}")

# self_signed_tls_client_auth: the registered certificate itself.
r = token(SELF_CLIENT, "selfsigned")
check(r.status_code == 200, f"self_signed_tls_client_auth : {r.status_code} {r.text}")
st = r.json()["access_token"]
check(claims(st)["cnf"]["x5t#S256"] == thumbprint("selfsigned"), "cnf du jeton autosigné")
check(fhir(st, "selfsigned").status_code == 200, "jeton autosigné + son certificat")
check(fhir(st, "client").status_code == 401, "jeton autosigné + autre certificat")

# A client with a secret over HTTPS: an unbound token, usable with or without a certificate.
r = requests.post(f"{ISS}/token", data={"grant_type": "client_credentials", "scope": "system/Patient.rs"},
                  auth=(SECRET_ID, SECRET), verify=CA)
check(r.status_code == 200, f"client à secret en HTTPS : {r.status_code} {r.text}")
plain = r.json()["access_token"]
check("cnf" not in claims(plain), "jeton non lié sans cnf")
check(fhir(plain).status_code == 200, "jeton non lié sans certificat")
check(fhir(plain, "other").status_code == 200, "jeton non lié avec un certificat")

# Introspection shows the binding (RFC 8705 §3.2); a client authenticated by certificate may introspect.
r = requests.post(f"{ISS}/introspect", data={"token": at}, auth=(SECRET_ID, SECRET), verify=CA)
check(r.status_code == 200 and r.json()["active"] is True, f"introspection : {r.text}")
check(r.json()["cnf"]["x5t#S256"] == thumbprint("client"), "cnf à l'introspection")
r = requests.post(f"{ISS}/introspect", data={"token": plain, "client_id": PKI_CLIENT}, verify=CA,
                  cert=cert("client"))
check(r.status_code == 200 and r.json()["active"] is True, f"introspection par un client mTLS : {r.text}")

# Revocation by the bound client, with its certificate: the token stops working.
r = requests.post(f"{ISS}/revoke", data={"token": at, "client_id": PKI_CLIENT}, verify=CA, cert=cert("client"))
check(r.status_code == 200, f"révocation : {r.status_code} {r.text}")
check(fhir(at, "client").status_code == 401, "jeton révoqué refusé")

print(f"TLS mutuel : {checks} vérifications réussies")
