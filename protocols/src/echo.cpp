#include "strata/protocols/echo.hpp"

#include "strata/transports/transport.hpp"

namespace strata {

// ---- EchoProtocol ----------------------------------------------------------------------------
//
// The data path is one virtual call: data_received -> Transport::write, which sends at once
// when its buffer is empty. No copy here, no allocation, no bookkeeping.

void EchoProtocol::connection_made(Transport& transport) { transport_ = &transport; }

void EchoProtocol::data_received(std::span<const std::byte> data) { transport_->write(data); }

bool EchoProtocol::eof_received() {
  // close() flushes the buffer before ending the connection, so the peer reads every echoed
  // byte and then end of file: what write_eof() followed by close() would show it, in one step.
  return false;
}

void EchoProtocol::connection_lost(std::error_code) { transport_ = nullptr; }

void EchoProtocol::pause_writing() {
  if (transport_) transport_->pause_reading();
}

void EchoProtocol::resume_writing() {
  if (transport_) transport_->resume_reading();
}

// ---- EchoDatagramProtocol --------------------------------------------------------------------

void EchoDatagramProtocol::connection_made(DatagramTransport& transport) {
  transport_ = &transport;
}

void EchoDatagramProtocol::datagram_received(std::span<const std::byte> data,
                                             const SocketAddress& addr) {
  ++datagrams_;
  bytes_ += data.size();
  transport_->sendto(data, addr);
}

void EchoDatagramProtocol::error_received(std::error_code) { ++errors_; }

void EchoDatagramProtocol::connection_lost(std::error_code) { transport_ = nullptr; }

}  // namespace strata
