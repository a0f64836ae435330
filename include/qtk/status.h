// Errors are values: every fallible library call returns Status or Expected<T>.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace qtk {

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,  // bad user input: shapes, dtypes, options
  kNotFound,         // missing file, tensor or name
  kUnsupported,      // valid ONNX we do not implement
  kParse,            // malformed file contents
  kIo,               // read/write failure
  kInternal,
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }
  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Returns a copy whose message is prefixed with `context: `.
  Status with_context(const std::string& context) const {
    if (ok()) return *this;
    return Status(code_, context + ": " + message_);
  }

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return {ErrorCode::kInvalidArgument, std::move(m)}; }
inline Status not_found(std::string m) { return {ErrorCode::kNotFound, std::move(m)}; }
inline Status unsupported(std::string m) { return {ErrorCode::kUnsupported, std::move(m)}; }
inline Status parse_error(std::string m) { return {ErrorCode::kParse, std::move(m)}; }
inline Status io_error(std::string m) { return {ErrorCode::kIo, std::move(m)}; }
inline Status internal_error(std::string m) { return {ErrorCode::kInternal, std::move(m)}; }

template <class T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Expected(Status status) : v_(std::move(status)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<1>(v_);
  }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace qtk

#define QTK_CONCAT_INNER(a, b) a##b
#define QTK_CONCAT(a, b) QTK_CONCAT_INNER(a, b)

#define QTK_RETURN_IF_ERROR(expr)                \
  do {                                           \
    ::qtk::Status qtk_status_ = (expr);          \
    if (!qtk_status_.ok()) return qtk_status_;   \
  } while (0)

// A GNU statement expression keeps this one statement, so it is safe as the
// body of an unbraced if (GCC and Clang both support it).
#define QTK_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  lhs = ({                                        \
    auto tmp = (expr);                            \
    if (!tmp.ok()) return tmp.status();           \
    std::move(tmp).value();                       \
  })

#define QTK_ASSIGN_OR_RETURN(lhs, expr) \
  QTK_ASSIGN_OR_RETURN_IMPL(QTK_CONCAT(qtk_expected_, __LINE__), lhs, expr)
