# frozen_string_literal: true

require "json"

module Pushgate
  module Cable
    class RPC
      # AnyCable's RPC over HTTP as AnyCable-Go (and pushgate) speaks it: Go's
      # encoding/json of rpc.proto's generated structs, not the proto3 JSON
      # mapping. So keys are snake_case, in the order the structs declare them,
      # a field at its zero value is left out (omitempty: status ERROR is 0, so
      # an error answer has no "status"), map keys are sorted, and <, > and &
      # are escaped as \u003c, \u003e and \u0026, as Go's json.Marshal does.
      module Wire
        SUCCESS = 1
        FAILURE = 2
        ERROR = 0

        # Go's json.Marshal escapes these inside strings; outside strings they
        # cannot occur in JSON, so a global replace is exact.
        GO_ESCAPES = { "<" => "\\u003c", ">" => "\\u003e", "&" => "\\u0026",
                       "\u2028" => "\\u2028", "\u2029" => "\\u2029" }.freeze

        # A Go struct: its fields in declaration order, zero values left out.
        GoStruct = ::Struct.new(:fields)

        module_function

        def connection_response(status:, identifiers: nil, transmissions: [], error_msg: nil, env: nil)
          go_json(GoStruct.new([["status", status], ["identifiers", identifiers], ["transmissions", transmissions],
                   ["error_msg", error_msg], ["env", env_response(env)]]))
        end

        def command_response(status:, disconnect: false, stop_streams: false, streams: [], transmissions: [],
                             error_msg: nil, env: nil, stopped_streams: [], presence: nil)
          go_json(GoStruct.new([["status", status], ["disconnect", disconnect], ["stop_streams", stop_streams],
                   ["streams", streams], ["transmissions", transmissions], ["error_msg", error_msg],
                   ["env", env_response(env)], ["stopped_streams", stopped_streams],
                   ["presence", presence && presence_response(presence)]]))
        end

        def disconnect_response(status:, error_msg: nil)
          go_json(GoStruct.new([["status", status], ["error_msg", error_msg]]))
        end

        # EnvResponse {cstate, istate}: nil (left out) when neither changed.
        def env_response(env)
          return nil if env.nil?

          return nil if zero?(env[:cstate]) && zero?(env[:istate])

          GoStruct.new([["cstate", env[:cstate]], ["istate", env[:istate]]])
        end

        def presence_response(presence)
          info = presence[:info]
          info = JSON.generate(info) unless info.nil? || info.is_a?(String)
          GoStruct.new([["type", presence[:type]], ["id", presence[:id]], ["info", info]])
        end

        def zero?(value)
          value.nil? || value == false || value == 0 || value == "" || (value.respond_to?(:empty?) && value.empty?)
        end

        def go_json(struct)
          escape(JSON.generate(plain(struct)))
        end

        def plain(value)
          case value
          when GoStruct then value.fields.each_with_object({}) { |(key, v), out| out[key] = plain(v) unless zero?(v) }
          when Hash then value.transform_keys(&:to_s).sort.to_h # a Go map: keys sorted
          else value
          end
        end

        def escape(json)
          json.gsub(/[<>&\u2028\u2029]/, GO_ESCAPES)
        end
      end
    end
  end
end
