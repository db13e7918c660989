package sio

import (
	"errors"
	"fmt"
)

// Error is a client-facing error with a stable code. Handlers return it to refuse a request; the
// client receives {ok:false, error:{code, message}} in its ack. Middleware returns it to refuse a
// handshake; the client receives connect_error with data.code.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Errorf returns an *Error with a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Codes the wrapper itself answers with.
const (
	CodeInvalidArgument = "invalid_argument"
	CodeReservedEvent   = "reserved_event"
	CodeUnknownEvent    = "unknown_event"
	CodeInternal        = "internal"
	// CodeTooManyNamespaces refuses a connect (connect_error data.code) on a connection that has
	// sockets in MaxNamespacesPerConn namespaces already.
	CodeTooManyNamespaces = "too_many_namespaces"
)

// MaxNamespacesPerConn bounds the namespaces one connection may join at once. The stock client
// multiplexes every namespace of a page on one connection, and pages use a few; the bound keeps
// a client from making one connection hold sockets (and, for dynamic namespaces, whole
// namespaces) by the thousand.
const MaxNamespacesPerConn = 100

// asError turns any handler error into the error the client sees: an *Error anywhere in the chain
// is kept, anything else is an internal error whose detail stays in the server log.
func asError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternal, Message: "internal error"}
}

// errorAck is the ack payload of a refused request.
type errorAck struct {
	OK    bool   `json:"ok"`
	Error *Error `json:"error"`
}
