import socket

from common.ports import _ephemeral_ports_start, free_port, port_in_use


def test_free_ports_are_distinct_free_and_below_the_kernels_ephemeral_range():
    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == 500
    assert all(1024 < port < _ephemeral_ports_start() for port in ports)
    assert not any(port_in_use(port) for port in ports[:50])


def test_a_listening_port_is_in_use_and_never_handed_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        taken = listener.getsockname()[1]
        assert port_in_use(taken)
        assert taken not in {free_port() for _ in range(500)}
