"""HTTP to a lem marker server (lem-run's own, or a lem-exporter), standard library only."""

import base64
import http.client
import json
import urllib.parse

# What a network failure looks like from http.client: refused, reset, timed out, or a reply that is not HTTP.
NETWORK_ERRORS = (OSError, http.client.HTTPException)
MAX_REPLY = 8 << 20


def redact(url):
    """The URL without its password, for messages."""
    try:
        u = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if u.password is None:
        return url
    netloc = "%s:xxxxx@%s" % (u.username, u.netloc.rsplit("@", 1)[1])
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


class Rejected(Exception):
    """The server answered with an error status."""

    def __init__(self, status, message):
        super().__init__("HTTP %d: %s" % (status, message))
        self.status = status


class Endpoint:
    """A server's root URL, with the marker token (bearer) or basic auth from the URL's user info (then the token
    goes in X-Lem-Marker-Token, as lem-exporter's web config requires)."""

    def __init__(self, url, token=""):
        try:
            u = urllib.parse.urlsplit(url.rstrip("/"))
            port = u.port
        except ValueError as e:
            raise ValueError("lem: URL %r: %s" % (redact(url), e)) from None
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("lem: URL %r: want http(s)://host[:port][/path]" % redact(url))
        self.https = u.scheme == "https"
        self.host, self.port, self.path = u.hostname, port, u.path
        self.user = urllib.parse.unquote(u.username) if u.username else ""
        self.password = urllib.parse.unquote(u.password) if u.password else ""
        self.token = token or ""
        host = "[%s]" % self.host if ":" in self.host else self.host
        self.display = "%s://%s%s%s" % (u.scheme, host, ":%d" % port if port else "", self.path)

    def connect(self, timeout):
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)

    def headers(self):
        h = {"Accept": "application/json"}
        if self.user:
            cred = "%s:%s" % (self.user, self.password)
            h["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
            if self.token:
                h["X-Lem-Marker-Token"] = self.token
        elif self.token:
            h["Authorization"] = "Bearer " + self.token
        return h

    def request(self, conn, method, path, body=None, query=None):
        """One request on conn; returns the decoded JSON reply (or text for non-JSON). Raises Rejected for an
        error status and NETWORK_ERRORS for the rest."""
        url = self.path + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = self.headers()
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, url, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read(MAX_REPLY)
        if resp.status >= 300:
            msg = raw[:1024].decode("utf-8", "replace").strip()
            try:
                msg = json.loads(msg).get("error") or msg
            except (ValueError, AttributeError):
                pass
            raise Rejected(resp.status, msg)
        ctype = resp.getheader("Content-Type", "")
        if "json" in ctype:
            try:
                return json.loads(raw)
            except ValueError:
                raise http.client.HTTPException("reply of %s %s is not JSON" % (method, url)) from None
        return raw.decode("utf-8", "replace")

    def once(self, method, path, body=None, query=None, timeout=5.0):
        """One request on a connection of its own."""
        conn = self.connect(timeout)
        try:
            return self.request(conn, method, path, body, query)
        finally:
            conn.close()
