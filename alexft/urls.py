"""A URL as a browser sends it (no TensorFlow, no network here)."""
import re
import urllib.parse

_SAFE = "/%:@!$&'()*+,;=~-._?"  # what may stay as it is in a path or query; '%' keeps escapes already there


def as_sent(url):
    """`url` with a space or a non-ASCII letter in its path or query percent-encoded, as a
    browser sends it (urllib sends them raw, and http.client refuses that with an exception no
    caller expects); the fragment, which is never sent, dropped. ValueError for white space in
    the host, or a host urllib cannot parse: that is no URL at all."""
    parts = urllib.parse.urlsplit(url)
    if re.search(r"[\s\x00-\x1f\x7f]", parts.netloc):
        raise ValueError("white space in the host name")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, urllib.parse.quote(parts.path, safe=_SAFE),
                                    urllib.parse.quote(parts.query, safe=_SAFE), ""))
