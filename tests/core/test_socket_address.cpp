#include <strata/core/socket_address.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_set>

using Catch::Matchers::Contains;
using strata::SocketAddress;

namespace {

constexpr std::size_t path_offset = offsetof(sockaddr_un, sun_path);

}  // namespace

TEST_CASE("SocketAddress: the default address is empty", "[core][socket_address]") {
  SocketAddress a;
  CHECK(a.empty());
  CHECK(a.family() == AF_UNSPEC);
  CHECK(a.size() == 0);
  CHECK_FALSE(a.is_ipv4());
  CHECK_FALSE(a.is_ipv6());
  CHECK_FALSE(a.is_unix());
  CHECK_FALSE(a.is_abstract());
  CHECK(a.port() == 0);
  CHECK(a.host().empty());
  CHECK(a.path().empty());
  CHECK(a.to_string() == "(unspecified)");
  CHECK(a == SocketAddress());
  CHECK(SocketAddress::capacity() == sizeof(sockaddr_storage));
}

TEST_CASE("SocketAddress: IPv4 from text and port", "[core][socket_address]") {
  SocketAddress a("127.0.0.1", 8080);
  CHECK(a.is_ipv4());
  CHECK_FALSE(a.empty());
  CHECK(a.family() == AF_INET);
  CHECK(a.size() == sizeof(sockaddr_in));
  CHECK(a.port() == 8080);
  CHECK(a.host() == "127.0.0.1");
  CHECK(a.to_string() == "127.0.0.1:8080");
  CHECK(a.path().empty());
  const auto* sin = reinterpret_cast<const sockaddr_in*>(a.data());
  CHECK(sin->sin_family == AF_INET);
  CHECK(sin->sin_port == htons(8080));
  CHECK(sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK));

  CHECK(SocketAddress("0.0.0.0", 0).to_string() == "0.0.0.0:0");
  CHECK(SocketAddress("255.255.255.255", 65535).to_string() == "255.255.255.255:65535");
}

TEST_CASE("SocketAddress: IPv6 from text and port", "[core][socket_address]") {
  SocketAddress a("::1", 8080);
  CHECK(a.is_ipv6());
  CHECK(a.family() == AF_INET6);
  CHECK(a.size() == sizeof(sockaddr_in6));
  CHECK(a.port() == 8080);
  CHECK(a.host() == "::1");
  CHECK(a.to_string() == "[::1]:8080");
  const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(a.data());
  CHECK(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
  CHECK(sin6->sin6_scope_id == 0);

  SocketAddress mapped("::ffff:10.0.0.1", 1);
  CHECK(mapped.is_ipv6());
  CHECK(mapped.host() == "::ffff:10.0.0.1");
  CHECK(SocketAddress("2001:DB8::A", 443).to_string() == "[2001:db8::a]:443");  // canonical form
}

TEST_CASE("SocketAddress: an IPv6 zone becomes the scope id", "[core][socket_address]") {
  SocketAddress numeric("fe80::1%7", 80);
  CHECK(reinterpret_cast<const sockaddr_in6*>(numeric.data())->sin6_scope_id == 7);
  CHECK(numeric.host() == "fe80::1%7");
  CHECK(numeric.to_string() == "[fe80::1%7]:80");

  const unsigned lo = ::if_nametoindex("lo");
  REQUIRE(lo != 0);
  SocketAddress named("fe80::1%lo", 80);
  CHECK(reinterpret_cast<const sockaddr_in6*>(named.data())->sin6_scope_id == lo);
  CHECK(named.host() == "fe80::1%" + std::to_string(lo));
  CHECK(named == SocketAddress("fe80::1%" + std::to_string(lo), 80));
  CHECK(named != SocketAddress("fe80::1", 80));
}

TEST_CASE("SocketAddress: bad IP text is refused with the text in the message",
          "[core][socket_address]") {
  for (const char* bad : {"", "localhost", "1.2.3", "256.0.0.1", "01.2.3.4", "1.2.3.4 ", "::1::2",
                          "[::1]", "127.0.0.1%1", "fe80::1%", "fe80::1%no-such-interface0",
                          "fe80::1%99999999999"}) {
    INFO("ip = \"" << bad << '"');
    CHECK_THROWS_AS(SocketAddress(bad, 80), std::invalid_argument);
  }
  CHECK_THROWS_WITH(SocketAddress("localhost", 80), Contains("\"localhost\""));
  CHECK_THROWS_WITH(SocketAddress("fe80::1%nope0", 80), Contains("nope0"));
}

TEST_CASE("SocketAddress: file system Unix paths", "[core][socket_address]") {
  SocketAddress a = SocketAddress::unix_path("/tmp/strata.sock");
  CHECK(a.is_unix());
  CHECK(a.family() == AF_UNIX);
  CHECK_FALSE(a.is_abstract());
  CHECK(a.path() == "/tmp/strata.sock");
  CHECK(a.to_string() == "/tmp/strata.sock");
  CHECK(a.port() == 0);
  CHECK(a.host().empty());
  // As getsockname() reports it: the terminating NUL counts.
  CHECK(a.size() == path_offset + std::strlen("/tmp/strata.sock") + 1);
  CHECK(std::strcmp(reinterpret_cast<const sockaddr_un*>(a.data())->sun_path,
                    "/tmp/strata.sock") == 0);

  // Relative paths are paths too; the longest one that fits leaves room for the NUL.
  const std::string longest(sizeof(sockaddr_un::sun_path) - 1, 'x');
  CHECK(SocketAddress::unix_path(longest).path() == longest);
  CHECK_THROWS_AS(SocketAddress::unix_path(longest + "x"), std::invalid_argument);
  CHECK_THROWS_WITH(SocketAddress::unix_path(longest + "x"), Contains("too long"));
  CHECK_THROWS_AS(SocketAddress::unix_path(std::string("a\0b", 3)), std::invalid_argument);
}

TEST_CASE("SocketAddress: abstract Unix names", "[core][socket_address]") {
  const std::string name("\0strata\0x", 9);
  SocketAddress a = SocketAddress::unix_path(name);
  CHECK(a.is_unix());
  CHECK(a.is_abstract());
  CHECK(a.path() == name);  // every byte, NULs included
  CHECK(a.size() == path_offset + name.size());
  CHECK(a.to_string() == std::string("@strata\0x", 9));
  CHECK(a != SocketAddress::unix_path(std::string("\0strata", 7)));
  CHECK(a != SocketAddress::unix_path("strata"));

  const std::string longest =
      std::string(1, '\0') + std::string(sizeof(sockaddr_un::sun_path) - 1, 'y');
  CHECK(SocketAddress::unix_path(longest).path() == longest);
  CHECK_THROWS_AS(SocketAddress::unix_path(longest + "y"), std::invalid_argument);
}

TEST_CASE("SocketAddress: the unnamed Unix address", "[core][socket_address]") {
  SocketAddress a = SocketAddress::unix_path("");
  CHECK(a.is_unix());
  CHECK_FALSE(a.is_abstract());
  CHECK(a.size() == sizeof(sa_family_t));
  CHECK(a.path().empty());
  CHECK(a.to_string() == "(unnamed)");
  sa_family_t family = AF_UNIX;
  CHECK(a == SocketAddress::from_native(reinterpret_cast<const sockaddr*>(&family),
                                        sizeof family));
}

TEST_CASE("SocketAddress: from_native copies the address", "[core][socket_address]") {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(53);
  ::inet_pton(AF_INET, "10.1.2.3", &sin.sin_addr);
  SocketAddress a = SocketAddress::from_native(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
  CHECK(a == SocketAddress("10.1.2.3", 53));
  CHECK(a.size() == sizeof sin);
  CHECK(std::memcmp(a.data(), &sin, sizeof sin) == 0);

  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(443);
  sin6.sin6_addr = in6addr_loopback;
  CHECK(SocketAddress::from_native(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6) ==
        SocketAddress("::1", 443));

  // A file system path reported without its NUL names the same socket.
  sockaddr_un sun{};
  sun.sun_family = AF_UNIX;
  std::memcpy(sun.sun_path, "/run/x", 6);
  SocketAddress no_nul = SocketAddress::from_native(reinterpret_cast<const sockaddr*>(&sun),
                                                    static_cast<socklen_t>(path_offset + 6));
  CHECK(no_nul.path() == "/run/x");
  CHECK(no_nul == SocketAddress::unix_path("/run/x"));

  CHECK(SocketAddress::from_native(nullptr, 0).empty());
  CHECK_THROWS_AS(SocketAddress::from_native(nullptr, 4), std::invalid_argument);
  CHECK_THROWS_AS(SocketAddress::from_native(reinterpret_cast<const sockaddr*>(&sin),
                                             sizeof sin - 1),
                  std::invalid_argument);
  CHECK_THROWS_AS(SocketAddress::from_native(reinterpret_cast<const sockaddr*>(&sin6),
                                             sizeof sin6 - 4),
                  std::invalid_argument);
  sockaddr_storage big{};
  CHECK_THROWS_AS(SocketAddress::from_native(reinterpret_cast<const sockaddr*>(&big),
                                             SocketAddress::capacity() + 1),
                  std::invalid_argument);
}

TEST_CASE("SocketAddress: mutable_data and set_size take what a socket call writes",
          "[core][socket_address]") {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  SocketAddress bound("127.0.0.1", 0);
  REQUIRE(::bind(fd, bound.data(), bound.size()) == 0);

  SocketAddress name;
  socklen_t len = SocketAddress::capacity();
  REQUIRE(::getsockname(fd, name.mutable_data(), &len) == 0);
  name.set_size(len);
  ::close(fd);
  CHECK(name.is_ipv4());
  CHECK(name.host() == "127.0.0.1");
  CHECK(name.port() != 0);
  CHECK(name.size() == sizeof(sockaddr_in));

  CHECK_THROWS_AS(name.set_size(SocketAddress::capacity() + 1), std::invalid_argument);
  name.set_size(0);
  CHECK(name.empty());
}

TEST_CASE("SocketAddress: equality looks at meaningful fields only", "[core][socket_address]") {
  CHECK(SocketAddress("127.0.0.1", 80) == SocketAddress("127.0.0.1", 80));
  CHECK(SocketAddress("127.0.0.1", 80) != SocketAddress("127.0.0.1", 81));
  CHECK(SocketAddress("127.0.0.1", 80) != SocketAddress("127.0.0.2", 80));
  CHECK(SocketAddress("127.0.0.1", 80) != SocketAddress("::ffff:127.0.0.1", 80));
  CHECK(SocketAddress("::1", 80) == SocketAddress("0:0:0:0:0:0:0:1", 80));
  CHECK(SocketAddress("::1", 80) != SocketAddress("::2", 80));
  CHECK(SocketAddress("fe80::1%1", 80) != SocketAddress("fe80::1%2", 80));
  CHECK(SocketAddress::unix_path("/a") == SocketAddress::unix_path("/a"));
  CHECK(SocketAddress::unix_path("/a") != SocketAddress::unix_path("/b"));
  CHECK(SocketAddress() != SocketAddress::unix_path("/a"));

  // Garbage in sin_zero (padding) does not matter.
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(80);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::memset(sin.sin_zero, 0xAB, sizeof sin.sin_zero);
  SocketAddress padded =
      SocketAddress::from_native(reinterpret_cast<const sockaddr*>(&sin), sizeof sin);
  CHECK(padded == SocketAddress("127.0.0.1", 80));
  CHECK(padded.hash() == SocketAddress("127.0.0.1", 80).hash());

  // IPv6 flow info is meaningful.
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(80);
  sin6.sin6_addr = in6addr_loopback;
  sin6.sin6_flowinfo = htonl(5);
  CHECK(SocketAddress::from_native(reinterpret_cast<const sockaddr*>(&sin6), sizeof sin6) !=
        SocketAddress("::1", 80));

  // Bytes past size() do not matter: a shorter address written over a longer one.
  SocketAddress reused("::1", 80);
  std::memcpy(reused.mutable_data(), &sin, sizeof sin);
  reused.set_size(sizeof sin);
  CHECK(reused == SocketAddress("127.0.0.1", 80));
  CHECK(reused.hash() == SocketAddress("127.0.0.1", 80).hash());
}

TEST_CASE("SocketAddress: std::hash keys unordered containers", "[core][socket_address]") {
  std::unordered_set<SocketAddress> set;
  set.insert(SocketAddress("127.0.0.1", 80));
  set.insert(SocketAddress("127.0.0.1", 80));
  set.insert(SocketAddress("127.0.0.1", 81));
  set.insert(SocketAddress("::1", 80));
  set.insert(SocketAddress::unix_path("/tmp/a"));
  set.insert(SocketAddress::unix_path(std::string("\0a", 2)));
  set.insert(SocketAddress());
  CHECK(set.size() == 6);
  CHECK(set.count(SocketAddress("127.0.0.1", 80)) == 1);
  CHECK(set.count(SocketAddress("127.0.0.1", 82)) == 0);
  CHECK(std::hash<SocketAddress>{}(SocketAddress("::1", 80)) == SocketAddress("::1", 80).hash());
  CHECK(SocketAddress("127.0.0.1", 80).hash() != SocketAddress("127.0.0.1", 81).hash());
}

TEST_CASE("SocketAddress: other families and streaming", "[core][socket_address]") {
  sockaddr other{};
  other.sa_family = AF_PACKET;
  SocketAddress a = SocketAddress::from_native(&other, sizeof other);
  CHECK(a.family() == AF_PACKET);
  CHECK(a.to_string() == "family " + std::to_string(AF_PACKET));
  CHECK(a.port() == 0);
  CHECK(a.host().empty());
  CHECK(a == SocketAddress::from_native(&other, sizeof other));
  CHECK(a != SocketAddress::from_native(&other, sizeof other - 1));

  std::ostringstream os;
  os << SocketAddress("::1", 8080) << ' ' << SocketAddress::unix_path("/s");
  CHECK(os.str() == "[::1]:8080 /s");
}
