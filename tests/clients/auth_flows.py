"""OAuth 2.0 / OpenID Connect flows against a running Socle with Python `requests`, as an integrator would write
them: client credentials, then the code flow with PKCE through the login pages (TOTP computed here, RFC 6238,
independently of Socle's implementation), refresh with rotation and reuse detection, introspection, revocation.

Usage: python3 auth_flows.py ROOT SYS_ID SYS_SECRET APP_ID LOGIN PASSWORD TOTP_BASE32 REDIRECT_URI
Run by crates/server/tests/python_clients.rs, which starts the server and creates the accounts and clients.
"""
import base64
import hashlib
import hmac
import html.parser
import secrets
import struct
import sys
import time
import urllib.parse

import requests

ROOT, SYS_ID, SYS_SECRET, APP_ID, LOGIN, PASSWORD, TOTP, REDIRECT = sys.argv[1:9]
ISS = f"{ROOT}/auth/pro"
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        print(f"ÉCHEC : {what}", file=sys.stderr)
        sys.exit(1)


def totp(secret_b32, step):
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    off = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[off:off + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{code:06d}"


class Form(html.parser.HTMLParser):
    """The first form of a page: its action and its input fields."""

    def __init__(self):
        super().__init__()
        self.action = None
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action")
        if tag == "input" and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")


def form_of(page):
    f = Form()
    f.feed(page)
    return f


# --- discovery
meta = requests.get(f"{ISS}/.well-known/openid-configuration", timeout=30).json()
check(meta["issuer"] == ISS, f"issuer : {meta.get('issuer')}")
check("S256" in meta["code_challenge_methods_supported"], "PKCE S256 annoncé")
jwks = requests.get(meta["jwks_uri"], timeout=30).json()
check({k["alg"] for k in jwks["keys"]} >= {"RS256", "ES256"}, f"clés publiées : {jwks}")

# --- client credentials (HTTP Basic)
r = requests.post(meta["token_endpoint"], data={"grant_type": "client_credentials", "scope": "system/*.rs"},
                  auth=(SYS_ID, SYS_SECRET), timeout=30)
check(r.status_code == 200, f"client_credentials : {r.status_code} {r.text}")
check(r.headers.get("Cache-Control") == "no-store", "réponse de jeton non mise en cache")
sys_token = r.json()["access_token"]
check(r.json()["token_type"] == "Bearer" and "refresh_token" not in r.json(), "jeton client")
r = requests.get(f"{ROOT}/fhir/Patient?_count=1", headers={"Authorization": f"Bearer {sys_token}"}, timeout=30)
check(r.status_code == 200, f"FHIR avec jeton : {r.status_code} {r.text}")
r = requests.get(f"{ROOT}/fhir/Patient?_count=1", timeout=30)
check(r.status_code == 401 and r.headers.get("WWW-Authenticate", "").startswith("Bearer"), "FHIR sans jeton : 401")
r = requests.post(meta["token_endpoint"], data={"grant_type": "client_credentials"}, auth=(SYS_ID, "faux"), timeout=30)
check(r.status_code == 401 and r.json()["error"] == "invalid_client", f"mauvais secret : {r.text}")

# --- authorization code + PKCE, through the login pages
verifier = secrets.token_urlsafe(48)
challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
state, nonce = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
params = {"response_type": "code", "client_id": APP_ID, "redirect_uri": REDIRECT, "state": state, "nonce": nonce,
          "scope": "openid profile offline_access user/*.rs", "code_challenge": challenge,
          "code_challenge_method": "S256"}
browser = requests.Session()
r = browser.get(meta["authorization_endpoint"], params=params, allow_redirects=False, timeout=30)
check(r.status_code == 200 and 'lang="fr"' in r.text, f"page de connexion : {r.status_code}")
f = form_of(r.text)
f.fields.update({"login": LOGIN, "password": PASSWORD})
r = browser.post(urllib.parse.urljoin(ROOT, f.action), data=f.fields, allow_redirects=False, timeout=30)
if r.status_code == 200 and 'name="code"' in r.text:
    f = form_of(r.text)
    # The step after the current one: still accepted (drift window) and never used by another test.
    f.fields["code"] = totp(TOTP, int(time.time()) // 30 + 1)
    r = browser.post(urllib.parse.urljoin(ROOT, f.action), data=f.fields, allow_redirects=False, timeout=30)
check(r.status_code == 303, f"connexion : {r.status_code} {r.text[:300]}")
back = urllib.parse.parse_qs(urllib.parse.urlsplit(r.headers["Location"]).query)
check(back["state"] == [state] and back["iss"] == [ISS], f"retour : {back}")
r = requests.post(meta["token_endpoint"], data={"grant_type": "authorization_code", "code": back["code"][0],
                                                 "redirect_uri": REDIRECT, "client_id": APP_ID,
                                                 "code_verifier": verifier}, timeout=30)
check(r.status_code == 200, f"échange du code : {r.status_code} {r.text}")
tok = r.json()
check({"access_token", "id_token", "refresh_token"} <= set(tok), f"jetons : {sorted(tok)}")
claims = tok["id_token"].split(".")[1]
claims = __import__("json").loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
check(claims["nonce"] == nonce and claims["aud"] == APP_ID and claims["iss"] == ISS, f"id_token : {claims}")
r = requests.get(meta["userinfo_endpoint"], headers={"Authorization": f"Bearer {tok['access_token']}"}, timeout=30)
check(r.status_code == 200 and r.json()["rpps"] == LOGIN, f"userinfo : {r.text}")

# --- refresh: rotation, then reuse of the old token revokes the grant
r = requests.post(meta["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"],
                                                 "client_id": APP_ID}, timeout=30)
check(r.status_code == 200 and r.json()["refresh_token"] != tok["refresh_token"], f"rafraîchissement : {r.text}")
fresh = r.json()
r = requests.get(f"{ROOT}/fhir/Organization?_count=1", headers={"Authorization": f"Bearer {fresh['access_token']}"},
                 timeout=30)
check(r.status_code == 200, f"jeton rafraîchi : {r.status_code}")
# A professional's search of patient data is about one patient, decided by the access policy.
r = requests.get(f"{ROOT}/fhir/Observation?_count=1", headers={"Authorization": f"Bearer {fresh['access_token']}"},
                 timeout=30)
check(r.status_code == 403 and "patient" in r.json()["issue"][0]["diagnostics"], f"recherche non ciblée : {r.text}")
r = requests.post(meta["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": tok["refresh_token"],
                                                 "client_id": APP_ID}, timeout=30)
check(r.status_code == 400 and r.json()["error"] == "invalid_grant", f"réutilisation : {r.text}")
r = requests.post(meta["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": fresh["refresh_token"],
                                                 "client_id": APP_ID}, timeout=30)
check(r.status_code == 400, f"successeur révoqué : {r.text}")

# --- introspection and revocation (the system client)
r = requests.post(meta["introspection_endpoint"], data={"token": sys_token}, auth=(SYS_ID, SYS_SECRET), timeout=30)
check(r.status_code == 200 and r.json()["active"] is True and r.json()["client_id"] == SYS_ID, f"introspection : {r.text}")
r = requests.post(meta["revocation_endpoint"], data={"token": sys_token}, auth=(SYS_ID, SYS_SECRET), timeout=30)
check(r.status_code == 200, f"révocation : {r.status_code}")
r = requests.post(meta["introspection_endpoint"], data={"token": sys_token}, auth=(SYS_ID, SYS_SECRET), timeout=30)
check(r.json()["active"] is False, f"révoqué : {r.text}")
r = requests.get(f"{ROOT}/fhir/Patient?_count=1", headers={"Authorization": f"Bearer {sys_token}"}, timeout=30)
check(r.status_code == 401, f"jeton révoqué refusé : {r.status_code}")

print(f"OK : {checks} vérifications (requests {requests.__version__})")
