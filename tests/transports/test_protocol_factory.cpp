#include <strata/transports/protocol_factory.hpp>

#include <catch2/catch.hpp>

#include <memory>
#include <stdexcept>
#include <type_traits>

#include <strata/transports/protocol.hpp>

namespace {

struct Plain : strata::Protocol {};
struct Buffered : strata::BufferedProtocol {
  std::span<std::byte> get_buffer(std::size_t) override { return {}; }
  void buffer_updated(std::size_t) override {}
};
struct Datagram : strata::DatagramProtocol {};
struct NotAProtocol {};

using PlainFactory = decltype([] { return std::make_unique<Plain>(); });
using BufferedFactory = decltype([] { return std::make_unique<Buffered>(); });

static_assert(strata::ProtocolFactory<PlainFactory>);
static_assert(strata::ProtocolFactory<BufferedFactory>);
static_assert(strata::ProtocolFactory<std::unique_ptr<Plain> (*)()>);
static_assert(std::is_same_v<strata::factory_protocol_t<PlainFactory>, Plain>);
static_assert(std::is_same_v<strata::factory_protocol_t<BufferedFactory>, Buffered>);
// Not stream protocols, not owning, or taking arguments: refused at compile time.
static_assert(!strata::ProtocolFactory<std::unique_ptr<Datagram> (*)()>);
static_assert(!strata::ProtocolFactory<std::unique_ptr<NotAProtocol> (*)()>);
static_assert(!strata::ProtocolFactory<std::unique_ptr<strata::BaseProtocol> (*)()>);
static_assert(!strata::ProtocolFactory<Plain* (*)()>);
static_assert(!strata::ProtocolFactory<std::shared_ptr<Plain> (*)()>);
static_assert(!strata::ProtocolFactory<std::unique_ptr<Plain> (*)(int)>);

}  // namespace

TEST_CASE("ProtocolFactory: erased, a factory still makes its protocol and lets its throw through",
          "[transports][protocol_factory]") {
  int calls = 0;
  strata::detail::AnyProtocolFactory erased([&calls] {
    ++calls;
    return std::make_unique<Plain>();
  });
  std::unique_ptr<strata::BaseProtocol> p = erased();
  CHECK(dynamic_cast<Plain*>(p.get()) != nullptr);
  CHECK(calls == 1);
  strata::detail::AnyProtocolFactory throwing(
      []() -> std::unique_ptr<Plain> { throw std::runtime_error("no"); });
  CHECK_THROWS_WITH(throwing(), "no");
}
