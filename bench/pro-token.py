#!/usr/bin/env python3
"""Prints an access token of a professional, obtained like a browser would (authorization code + PKCE through the
login page), for the benchmarks. The server must list 127.0.0.0/8 as an establishment network (password only).

Usage: pro-token.py ROOT CLIENT_ID REDIRECT_URI LOGIN PASSWORD [SCOPE]
"""
import base64
import hashlib
import html.parser
import secrets
import sys
import urllib.parse

import requests

root, client, redirect, login, password = sys.argv[1:6]
scope = sys.argv[6] if len(sys.argv) > 6 else "openid user/*.rs"


class Form(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.action, self.fields = None, {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = a.get("action")
        if tag == "input" and a.get("name"):
            self.fields[a["name"]] = a.get("value", "")


verifier = secrets.token_urlsafe(48)
challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
s = requests.Session()
r = s.get(f"{root}/auth/pro/authorize", params={"response_type": "code", "client_id": client, "redirect_uri": redirect,
                                                "scope": scope, "code_challenge": challenge,
                                                "code_challenge_method": "S256"}, allow_redirects=False, timeout=30)
f = Form()
f.feed(r.text)
f.fields.update({"login": login, "password": password})
r = s.post(urllib.parse.urljoin(root, f.action), data=f.fields, allow_redirects=False, timeout=30)
if r.status_code != 303:
    sys.exit(f"connexion refusée : {r.status_code} {r.text[:300]}")
code = urllib.parse.parse_qs(urllib.parse.urlsplit(r.headers["Location"]).query)["code"][0]
r = requests.post(f"{root}/auth/pro/token", data={"grant_type": "authorization_code", "code": code, "client_id": client,
                                                  "redirect_uri": redirect, "code_verifier": verifier}, timeout=30)
r.raise_for_status()
print(r.json()["access_token"])
