#include <strata/core/resolver.hpp>

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <exception>
#include <sstream>
#include <string>
#include <system_error>
#include <vector>

#include <strata/core/coro.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/executor.hpp>
#include <strata/core/future.hpp>
#include <strata/core/socket_address.hpp>
#include <strata/core/task.hpp>

#include "loop_test.hpp"

using namespace std::chrono_literals;
using Catch::Matchers::Contains;
using strata::AddrInfo;
using strata::CancelledError;
using strata::Coro;
using strata::Future;
using strata::NameInfo;
using strata::SocketAddress;
using strata::testing::TestLoop;

namespace {

template <class T>
Coro<T> await_future(Future<T> f) {
  co_return co_await f;
}

/// What a failed lookup threw: its code, and its what().
struct Failure {
  std::error_code code;
  std::string what;
};

template <class T>
Coro<Failure> await_failure(Future<T> f) {
  try {
    co_await f;
  } catch (const std::system_error& e) {
    co_return Failure{e.code(), e.what()};
  }
  co_return Failure{};
}

Coro<std::string> await_cancelled(Future<std::vector<AddrInfo>> f) {
  try {
    co_await f;
  } catch (const CancelledError&) {
    co_return "cancelled";
  }
  co_return "not cancelled";
}

/// The error of a future that is done with a std::system_error.
template <class T>
std::error_code error_of(const Future<T>& f) {
  try {
    f.result();
  } catch (const std::system_error& e) {
    return e.code();
  }
  return {};
}

std::error_code eai(int code) { return {code, strata::resolver_category()}; }

/// "family/type/protocol address canonname", for readable failures.
std::string describe(const std::vector<AddrInfo>& infos) {
  std::ostringstream os;
  for (const AddrInfo& i : infos) {
    os << i.family << '/' << i.type << '/' << i.protocol << ' ' << i.address << ' '
       << i.canonname << "; ";
  }
  return os.str();
}

/// ::getaddrinfo() called directly, as (error, results).
struct Direct {
  int error = 0;
  std::vector<AddrInfo> infos;
};

Direct direct_getaddrinfo(const std::string& host, const std::string& port, int family, int type,
                          int protocol, int flags) {
  addrinfo hints{};
  hints.ai_family = family;
  hints.ai_socktype = type;
  hints.ai_protocol = protocol;
  hints.ai_flags = flags;
  addrinfo* list = nullptr;
  Direct d;
  d.error = ::getaddrinfo(host.empty() ? nullptr : host.c_str(),
                          port.empty() ? nullptr : port.c_str(), &hints, &list);
  if (d.error != 0) return d;
  for (const addrinfo* p = list; p != nullptr; p = p->ai_next) {
    d.infos.push_back(AddrInfo{p->ai_family, p->ai_socktype, p->ai_protocol,
                               p->ai_canonname ? p->ai_canonname : "",
                               SocketAddress::from_native(p->ai_addr, p->ai_addrlen)});
  }
  ::freeaddrinfo(list);
  return d;
}

bool all_loopback(const std::vector<AddrInfo>& infos) {
  for (const AddrInfo& i : infos) {
    if (i.address.host() != "127.0.0.1" && i.address.host() != "::1") return false;
  }
  return true;
}

}  // namespace

TEST_CASE("resolver_category: names EAI codes with gai_strerror", "[core][resolver]") {
  const std::error_category& cat = strata::resolver_category();
  CHECK(std::string(cat.name()) == "resolver");
  CHECK(&cat == &strata::resolver_category());
  CHECK(cat.message(EAI_NONAME) == ::gai_strerror(EAI_NONAME));
  CHECK(cat.message(EAI_SERVICE) == ::gai_strerror(EAI_SERVICE));
  CHECK(eai(EAI_AGAIN) == std::errc::resource_unavailable_try_again);
  CHECK(eai(EAI_MEMORY) == std::errc::not_enough_memory);
  CHECK(eai(EAI_NONAME).default_error_condition().category() == cat);
  CHECK(eai(EAI_NONAME) != std::errc::resource_unavailable_try_again);
}

STRATA_LOOP_TEST_CASE("getaddrinfo: a numeric IPv4 address resolves on the spot",
                      "[core][resolver]") {
  TestLoop loop(TestType::kind);
  Future<std::vector<AddrInfo>> f = loop->getaddrinfo("127.0.0.1", "8080");
  REQUIRE(f.done());  // no thread hop: complete before the loop ever ran
  const SocketAddress expected("127.0.0.1", 8080);
  const std::vector<AddrInfo> want = {{AF_INET, SOCK_STREAM, IPPROTO_TCP, "", expected},
                                      {AF_INET, SOCK_DGRAM, IPPROTO_UDP, "", expected},
                                      {AF_INET, SOCK_RAW, 0, "", expected}};
  CHECK(f.result() == want);
  CHECK(loop.run(await_future(f)) == want);  // and it can be awaited like any other
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("getaddrinfo: a numeric IPv6 address resolves on the spot",
                      "[core][resolver]") {
  TestLoop loop(TestType::kind);
  Future<std::vector<AddrInfo>> f = loop->getaddrinfo("::1", "443", AF_UNSPEC, SOCK_STREAM);
  REQUIRE(f.done());
  REQUIRE(f.result().size() == 1);
  const AddrInfo& info = f.result().front();
  CHECK(info.family == AF_INET6);
  CHECK(info.type == SOCK_STREAM);
  CHECK(info.protocol == IPPROTO_TCP);
  CHECK(info.address == SocketAddress("::1", 443));
  CHECK(info.address.to_string() == "[::1]:443");
  CHECK(info.canonname.empty());

  // A zone is resolved on the spot too.
  const unsigned lo = ::if_nametoindex("lo");
  Future<std::vector<AddrInfo>> scoped =
      loop->getaddrinfo("fe80::1%lo", "80", AF_INET6, SOCK_DGRAM);
  REQUIRE(scoped.done());
  REQUIRE(scoped.result().size() == 1);
  CHECK(scoped.result().front().address ==
        SocketAddress("fe80::1%" + std::to_string(lo), 80));
}

STRATA_LOOP_TEST_CASE("getaddrinfo: numeric addresses never touch the executor",
                      "[core][resolver]") {
  TestLoop loop(TestType::kind);
  loop->default_executor().shutdown();  // from now on, anything submitted is refused
  CHECK_THROWS_AS(loop->getaddrinfo("localhost", "80"), strata::ExecutorShutdownError);
  CHECK_THROWS_AS(loop->getnameinfo(SocketAddress("127.0.0.1", 80)),
                  strata::ExecutorShutdownError);

  CHECK(loop->getaddrinfo("10.0.0.1", "80").result().size() == 3);
  CHECK(loop->getaddrinfo("::1", "").result().size() == 3);
  CHECK(loop->getaddrinfo("", "80", AF_INET).result().size() == 3);
  CHECK(loop->getaddrinfo("", "80").result().size() == 6);  // both loopbacks
  CHECK(loop->getaddrinfo("127.0.0.1", "80", 0, 0, 0, AI_ADDRCONFIG).done());
  CHECK(error_of(loop->getaddrinfo("localhost", "80", 0, 0, 0, AI_NUMERICHOST)) ==
        eai(EAI_NONAME));
  NameInfo numeric =
      loop->getnameinfo(SocketAddress("127.0.0.1", 80), NI_NUMERICHOST | NI_NUMERICSERV).result();
  CHECK(numeric == NameInfo{"127.0.0.1", "80"});
}

STRATA_LOOP_TEST_CASE("getaddrinfo: an empty host is the loopback, or with AI_PASSIVE the "
                      "wildcard",
                      "[core][resolver]") {
  TestLoop loop(TestType::kind);
  auto only = [&](std::string host, int family, int flags) {
    Future<std::vector<AddrInfo>> f =
        loop->getaddrinfo(std::move(host), "80", family, SOCK_STREAM, 0, flags);
    REQUIRE(f.done());
    REQUIRE(f.result().size() == 1);
    return f.result().front().address;
  };
  CHECK(only("", AF_INET, 0) == SocketAddress("127.0.0.1", 80));
  CHECK(only("", AF_INET6, 0) == SocketAddress("::1", 80));
  CHECK(only("", AF_INET, AI_PASSIVE) == SocketAddress("0.0.0.0", 80));
  CHECK(only("", AF_INET6, AI_PASSIVE) == SocketAddress("::", 80));
  CHECK(only("*", AF_INET, AI_PASSIVE) == SocketAddress("0.0.0.0", 80));  // glibc's "*"
  // A numeric host ignores AI_PASSIVE.
  CHECK(only("127.0.0.1", AF_INET, AI_PASSIVE) == SocketAddress("127.0.0.1", 80));

  // Without a family, both, in the order the C library sorts them.
  Future<std::vector<AddrInfo>> both = loop->getaddrinfo("", "80", AF_UNSPEC, SOCK_STREAM, 0,
                                                         AI_PASSIVE);
  REQUIRE(both.done());
  std::vector<std::string> hosts;
  for (const AddrInfo& i : both.result()) hosts.push_back(i.address.host());
  CHECK_THAT(hosts, Catch::Matchers::UnorderedEquals(std::vector<std::string>{"0.0.0.0", "::"}));

  // No host and no port: nothing to resolve.
  Future<std::vector<AddrInfo>> neither = loop->getaddrinfo("", "");
  REQUIRE(neither.done());
  CHECK(error_of(neither) == eai(EAI_NONAME));
}

STRATA_LOOP_TEST_CASE("getaddrinfo: the family, type and protocol filter the results",
                      "[core][resolver]") {
  TestLoop loop(TestType::kind);
  auto kinds = [&](int type, int protocol) {
    Future<std::vector<AddrInfo>> f = loop->getaddrinfo("127.0.0.1", "80", 0, type, protocol);
    REQUIRE(f.done());
    std::vector<std::pair<int, int>> out;
    for (const AddrInfo& i : f.result()) out.emplace_back(i.type, i.protocol);
    return out;
  };
  using Kinds = std::vector<std::pair<int, int>>;
  CHECK(kinds(SOCK_STREAM, 0) == Kinds{{SOCK_STREAM, IPPROTO_TCP}});
  CHECK(kinds(SOCK_DGRAM, 0) == Kinds{{SOCK_DGRAM, IPPROTO_UDP}});
  CHECK(kinds(0, IPPROTO_UDP) == Kinds{{SOCK_DGRAM, IPPROTO_UDP}});
  CHECK(kinds(0, IPPROTO_SCTP) == Kinds{{SOCK_STREAM, IPPROTO_SCTP}});
  CHECK(kinds(SOCK_SEQPACKET, 0) == Kinds{{SOCK_SEQPACKET, IPPROTO_SCTP}});

  // A type and protocol that do not go together, and SOCK_RAW with a port, fail as in glibc.
  CHECK(error_of(loop->getaddrinfo("127.0.0.1", "80", 0, SOCK_STREAM, IPPROTO_UDP)) ==
        eai(EAI_SOCKTYPE));
  CHECK(error_of(loop->getaddrinfo("127.0.0.1", "80", 0, SOCK_RAW)) == eai(EAI_SERVICE));
  CHECK(error_of(loop->getaddrinfo("127.0.0.1", "80", AF_UNIX)) == eai(EAI_FAMILY));

  // The family: an address of the other family fails, unless it maps.
  Future<std::vector<AddrInfo>> mismatch = loop->getaddrinfo("::1", "80", AF_INET);
  REQUIRE(mismatch.done());
  Failure failure = loop.run(await_failure(mismatch));
  CHECK(failure.code == eai(EAI_ADDRFAMILY));
  CHECK_THAT(failure.what, Contains("\"::1\"") && Contains("\"80\"") &&
                               Contains(::gai_strerror(EAI_ADDRFAMILY)));
  CHECK(error_of(loop->getaddrinfo("127.0.0.1", "80", AF_INET6)) == eai(EAI_ADDRFAMILY));

  Future<std::vector<AddrInfo>> mapped =
      loop->getaddrinfo("127.0.0.1", "80", AF_INET6, SOCK_STREAM, 0, AI_V4MAPPED);
  REQUIRE(mapped.done());
  REQUIRE(mapped.result().size() == 1);
  CHECK(mapped.result().front().address == SocketAddress("::ffff:127.0.0.1", 80));
  Future<std::vector<AddrInfo>> unmapped =
      loop->getaddrinfo("::ffff:127.0.0.1", "80", AF_INET, SOCK_STREAM);
  REQUIRE(unmapped.done());
  REQUIRE(unmapped.result().size() == 1);
  CHECK(unmapped.result().front().address == SocketAddress("127.0.0.1", 80));

  // AI_CANONNAME on a numeric host: the text itself, on the first result only.
  Future<std::vector<AddrInfo>> canon = loop->getaddrinfo("127.0.0.1", "", 0, 0, 0, AI_CANONNAME);
  REQUIRE(canon.done());
  REQUIRE(canon.result().size() == 3);
  CHECK(canon.result()[0].canonname == "127.0.0.1");
  CHECK(canon.result()[1].canonname.empty());
  CHECK(canon.result()[0].address.port() == 0);  // no port: 0
  CHECK(loop.errors().empty());
}

TEST_CASE("getaddrinfo: the inline path gives what ::getaddrinfo() gives", "[core][resolver]") {
  // Every combination that needs no lookup, against the C library itself: results and their
  // order, or the error code.
  TestLoop loop(strata::available_loop_kinds().front());
  const std::vector<std::string> hosts = {"",          "*",        "127.0.0.1",      "0.0.0.0",
                                          "::1",       "::",       "::ffff:1.2.3.4", "fe80::1%lo",
                                          "fe80::1%1", "fe80::1%", "localhost",      "1.2"};
  const std::vector<std::string> ports = {"", "*", "80", "0080"};
  const std::vector<int> families = {AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX};
  const std::vector<int> types = {0,        SOCK_STREAM, SOCK_DGRAM, SOCK_RAW, SOCK_SEQPACKET,
                                  SOCK_DCCP, SOCK_STREAM | SOCK_NONBLOCK};
  const std::vector<int> protocols = {0, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP, IPPROTO_UDPLITE,
                                      255};
  const std::vector<int> flag_sets = {0,
                                      AI_PASSIVE,
                                      AI_CANONNAME,
                                      AI_NUMERICHOST,
                                      AI_V4MAPPED,
                                      AI_V4MAPPED | AI_ALL,
                                      AI_NUMERICSERV,
                                      AI_ADDRCONFIG,
                                      AI_PASSIVE | AI_CANONNAME | AI_V4MAPPED};
  int compared = 0;
  for (const std::string& host : hosts) {
    const bool is_name = host == "localhost" || host == "1.2";
    for (const std::string& port : ports) {
      for (int family : families) {
        for (int type : types) {
          for (int protocol : protocols) {
            for (int flags : flag_sets) {
              if (is_name && (flags & AI_NUMERICHOST) == 0) continue;  // would look it up
              INFO("host \"" << host << "\" port \"" << port << "\" family " << family
                             << " type " << type << " protocol " << protocol << " flags "
                             << flags);
              Future<std::vector<AddrInfo>> f =
                  loop->getaddrinfo(host, port, family, type, protocol, flags);
              REQUIRE(f.done());
              const Direct want = direct_getaddrinfo(host, port, family, type, protocol, flags);
              if (want.error != 0) {
                CHECK(error_of(f) == eai(want.error));
              } else {
                REQUIRE(error_of(f).value() == 0);
                INFO("got " << describe(f.result()) << "\nwant " << describe(want.infos));
                CHECK(f.result() == want.infos);
              }
              ++compared;
            }
          }
        }
      }
    }
  }
  CHECK(compared > 10000);
}

STRATA_LOOP_TEST_CASE("getaddrinfo: a host name resolves on the default executor",
                      "[core][resolver]") {
  TestLoop loop(TestType::kind);
  Future<std::vector<AddrInfo>> any = loop->getaddrinfo("localhost", "80");
  CHECK_FALSE(any.done());  // it went to a worker thread
  std::vector<AddrInfo> infos = loop.run(await_future(any));
  REQUIRE_FALSE(infos.empty());
  CHECK(all_loopback(infos));

  Future<std::vector<AddrInfo>> v4 = loop->getaddrinfo("localhost", "80", AF_INET, SOCK_STREAM);
  infos = loop.run(await_future(v4));
  REQUIRE(infos.size() == 1);
  CHECK(infos.front().family == AF_INET);
  CHECK(infos.front().type == SOCK_STREAM);
  CHECK(infos.front().protocol == IPPROTO_TCP);
  CHECK(infos.front().address == SocketAddress("127.0.0.1", 80));

  // A service name is looked up too (/etc/services), on the executor.
  Future<std::vector<AddrInfo>> http = loop->getaddrinfo("127.0.0.1", "http", AF_INET, SOCK_STREAM);
  CHECK_FALSE(http.done());
  infos = loop.run(await_future(http));
  REQUIRE(infos.size() == 1);
  CHECK(infos.front().address == SocketAddress("127.0.0.1", 80));

  // AI_CANONNAME with a name.
  Future<std::vector<AddrInfo>> canon =
      loop->getaddrinfo("localhost", "", AF_INET, SOCK_STREAM, 0, AI_CANONNAME);
  infos = loop.run(await_future(canon));
  REQUIRE_FALSE(infos.empty());
  CHECK(infos.front().canonname == "localhost");
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("getaddrinfo: failed lookups fail the future with a system_error",
                      "[core][resolver]") {
  TestLoop loop(TestType::kind);

  Future<std::vector<AddrInfo>> service = loop->getaddrinfo("127.0.0.1", "no-such-service");
  Failure f = loop.run(await_failure(service));
  CHECK(f.code == eai(EAI_SERVICE));
  CHECK_THAT(f.what, Contains("getaddrinfo") && Contains("\"127.0.0.1\"") &&
                         Contains("\"no-such-service\""));

  // AI_NUMERICSERV refuses a service name.
  Future<std::vector<AddrInfo>> numeric_serv =
      loop->getaddrinfo("127.0.0.1", "http", 0, 0, 0, AI_NUMERICSERV);
  CHECK(loop.run(await_failure(numeric_serv)).code == eai(EAI_NONAME));

  // A name under .invalid never resolves. With no network the resolver gives up at once; with
  // one, the answer is NXDOMAIN. Either way it is bounded by the test's deadline.
  Future<std::vector<AddrInfo>> host = loop->getaddrinfo("no-such-host.invalid", "80");
  f = loop.run(await_failure(host), 60s);
  CHECK(f.code.category() == strata::resolver_category());
  CHECK((f.code == eai(EAI_NONAME) || f.code == eai(EAI_AGAIN)));
  CHECK_THAT(f.what, Contains("\"no-such-host.invalid\""));
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("getaddrinfo: cancelling drops the result of a running lookup",
                      "[core][resolver]") {
  TestLoop loop(TestType::kind);
  Future<std::vector<AddrInfo>> f = loop->getaddrinfo("localhost", "80");
  REQUIRE_FALSE(f.done());
  CHECK(f.cancel());
  CHECK(loop.run(await_cancelled(f)) == "cancelled");
  // The worker's result arrives later and is dropped without a report.
  Future<std::vector<AddrInfo>> after = loop->getaddrinfo("localhost", "80");
  CHECK_FALSE(loop.run(await_future(after)).empty());
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("getnameinfo: numeric flags answer on the spot", "[core][resolver]") {
  TestLoop loop(TestType::kind);
  Future<NameInfo> f =
      loop->getnameinfo(SocketAddress("127.0.0.1", 80), NI_NUMERICHOST | NI_NUMERICSERV);
  REQUIRE(f.done());
  CHECK(f.result() == NameInfo{"127.0.0.1", "80"});
  CHECK(loop.run(await_future(f)) == NameInfo{"127.0.0.1", "80"});

  Future<NameInfo> v6 =
      loop->getnameinfo(SocketAddress("::1", 8443), NI_NUMERICHOST | NI_NUMERICSERV);
  REQUIRE(v6.done());
  CHECK(v6.result() == NameInfo{"::1", "8443"});

  // An empty address has no family to name.
  Future<NameInfo> empty = loop->getnameinfo(SocketAddress(), NI_NUMERICHOST | NI_NUMERICSERV);
  REQUIRE(empty.done());
  Failure failure = loop.run(await_failure(empty));
  CHECK(failure.code == eai(EAI_FAMILY));
  CHECK_THAT(failure.what, Contains("getnameinfo"));
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("getnameinfo: names are looked up on the default executor",
                      "[core][resolver]") {
  TestLoop loop(TestType::kind);
  Future<NameInfo> f = loop->getnameinfo(SocketAddress("127.0.0.1", 80));
  CHECK_FALSE(f.done());
  NameInfo info = loop.run(await_future(f));
  CHECK(info.host == "localhost");  // /etc/hosts
  CHECK(info.service == "http");    // /etc/services

  Future<NameInfo> numeric_host = loop->getnameinfo(SocketAddress("127.0.0.1", 80), NI_NUMERICHOST);
  CHECK_FALSE(numeric_host.done());
  CHECK(loop.run(await_future(numeric_host)) == NameInfo{"127.0.0.1", "http"});

  Future<NameInfo> unix_socket =
      loop->getnameinfo(SocketAddress::unix_path("/tmp/strata.sock"), NI_NUMERICHOST);
  CHECK(loop.run(await_future(unix_socket)).service == "/tmp/strata.sock");

  Future<NameInfo> empty = loop->getnameinfo(SocketAddress());
  Failure failure = loop.run(await_failure(empty));
  CHECK(failure.code == eai(EAI_FAMILY));
  CHECK_THAT(failure.what, Contains("getnameinfo (unspecified)"));
  CHECK(loop.errors().empty());
}

STRATA_LOOP_TEST_CASE("getaddrinfo and getnameinfo: a closed loop refuses them",
                      "[core][resolver]") {
  TestLoop loop(TestType::kind);
  loop->close();
  CHECK_THROWS_AS(loop->getaddrinfo("127.0.0.1", "80"), strata::EventLoopError);
  CHECK_THROWS_AS(loop->getaddrinfo("localhost", "80"), strata::EventLoopError);
  CHECK_THROWS_AS(loop->getnameinfo(SocketAddress("127.0.0.1", 80)), strata::EventLoopError);
  CHECK_THROWS_AS(
      loop->getnameinfo(SocketAddress("127.0.0.1", 80), NI_NUMERICHOST | NI_NUMERICSERV),
      strata::EventLoopError);
}
