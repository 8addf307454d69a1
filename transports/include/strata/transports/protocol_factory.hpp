#pragma once
/// @file
/// ProtocolFactory: what create_connection(), create_server() and the Unix variants take to
/// make the protocol of each connection (asyncio's protocol_factory).

#include <concepts>
#include <memory>
#include <type_traits>

#include "strata/core/detail/unique_function.hpp"
#include "strata/transports/protocol.hpp"

namespace strata {

namespace detail {
template <class T>
struct is_stream_protocol_ptr : std::false_type {};
template <class P, class D>
struct is_stream_protocol_ptr<std::unique_ptr<P, D>>
    : std::bool_constant<std::is_same_v<D, std::default_delete<P>> &&
                         (std::derived_from<P, Protocol> || std::derived_from<P, BufferedProtocol>)> {};
}  // namespace detail

/// A callable that makes the protocol of one stream connection: called with no arguments, it
/// returns `std::unique_ptr<P>` with P derived from Protocol or BufferedProtocol.
///
/// ```
/// auto factory = [&state] { return std::make_unique<EchoProtocol>(state); };
/// ```
/// A factory is called once per connection, on the loop's thread, after the socket is
/// connected (or accepted) and before connection_made(). It may throw: create_connection()
/// then throws that exception, and a Server reports it to the loop's exception handler and
/// closes that one connection.
template <class F>
concept ProtocolFactory =
    std::invocable<F&> && detail::is_stream_protocol_ptr<std::invoke_result_t<F&>>::value;

/// The protocol type P that the factory F makes.
template <ProtocolFactory F>
using factory_protocol_t = typename std::invoke_result_t<F&>::element_type;

namespace detail {
/// A ProtocolFactory with its type erased: how servers keep theirs.
using AnyProtocolFactory = UniqueFunction<std::unique_ptr<BaseProtocol>()>;
}  // namespace detail

}  // namespace strata
