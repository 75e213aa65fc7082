package httpapi

import (
	"net/netip"
	"strings"
)

// clientAddr returns the address of the client that sent a request through
// the TCP peer peer, given the X-Forwarded-For header values xff and which
// addresses are trusted proxies.
//
// A peer that is not a trusted proxy is the client: its header is ignored.
// From a trusted proxy, the hops are read from the right, skipping trusted
// proxies; the first other hop is the client. A hop is an address, or an
// address with a port ("192.0.2.7:5555", "[2001:db8::9]:5555", as some
// proxies write them). Anything else ("unknown", an obfuscated RFC 7239
// identifier, an address with a zone, garbage) fails closed: the result is
// the invalid netip.Addr, "no source address", which no CIDR contains.
// It is never the proxy's own address in that case, because a proxy inside
// a trusted_enrollment CIDR would otherwise lend its address to every
// client behind it.
//
// With no hop at all, or only trusted ones, the left-most trusted address
// is the client (a proxy's own request, or a trusted proxy that adds no
// header): that is what the operator's server.trusted_proxies says.
func clientAddr(peer netip.Addr, xff []string, trusted func(netip.Addr) bool) netip.Addr {
	if !trusted(peer) {
		return peer
	}
	addr := peer
	hops := strings.Split(strings.Join(xff, ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.TrimSpace(hops[i])
		if h == "" {
			continue
		}
		hop, ok := parseHop(h)
		if !ok {
			return netip.Addr{}
		}
		if !trusted(hop) {
			return hop
		}
		addr = hop
	}
	return addr
}

// parseHop parses one X-Forwarded-For hop: an IP address, or ip:port,
// [ipv6]:port or [ipv6]. The address is unmapped (::ffff:192.0.2.1 is
// 192.0.2.1); one with a zone is refused, since a zone names an interface
// of the proxy, not a client.
func parseHop(h string) (netip.Addr, bool) {
	addr, err := netip.ParseAddr(h)
	if err != nil {
		if ap, perr := netip.ParseAddrPort(h); perr == nil {
			addr, err = ap.Addr(), nil
		} else if v6, ok := strings.CutPrefix(h, "["); ok && strings.HasSuffix(v6, "]") {
			addr, err = netip.ParseAddr(strings.TrimSuffix(v6, "]"))
			if err == nil && !addr.Is6() {
				return netip.Addr{}, false
			}
		}
	}
	if err != nil || !addr.IsValid() || addr.Zone() != "" {
		return netip.Addr{}, false
	}
	return addr.Unmap(), true
}
