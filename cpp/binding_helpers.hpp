// Helpers shared by the bindings of both extension modules (_core and _cuda): std::vector ->
// NumPy copies and argument parsing.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "backend.hpp"

namespace ulcmod {

// A (rows x cols) C-ordered copy of v.
template <class T>
pybind11::array_t<T> to_numpy(const std::vector<T>& v, int64_t rows, int64_t cols) {
    pybind11::array_t<T> out({rows, cols});
    std::copy(v.begin(), v.end(), out.mutable_data());
    return out;
}

template <class T>
pybind11::array_t<T> to_numpy(const std::vector<T>& v) {
    return pybind11::array_t<T>(static_cast<pybind11::ssize_t>(v.size()), v.data());
}

inline TablePolicy parse_policy(const std::string& s) {
    if (s == "auto") return TablePolicy::Auto;
    if (s == "rebuild") return TablePolicy::Rebuild;
    if (s == "update") return TablePolicy::Update;
    throw pybind11::value_error("table_policy must be 'auto', 'rebuild' or 'update', got '" + s + "'");
}

}  // namespace ulcmod
