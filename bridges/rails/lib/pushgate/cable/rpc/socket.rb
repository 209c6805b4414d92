# frozen_string_literal: true

require "json"

module Pushgate
  module Cable
    class RPC
      # The reserved istate keys, as anycable-rails sets them: the stream a
      # subscription's whispers go to, and the stream its presence is kept on.
      WHISPER_KEY = "$w"
      PRESENCE_KEY = "$p"

      # A string map kept by the gateway between calls (a connection's cstate,
      # a subscription's istate): read what the call brought, record what the
      # app changes, answer only the changes (an empty string deletes a key).
      class State
        def initialize(source)
          @values = source.is_a?(Hash) ? source.transform_keys(&:to_s) : {}
          @changed = {}
        end

        def [](key)
          @values[key.to_s]
        end

        def []=(key, value)
          key = key.to_s
          value = value.to_s
          return if @values[key] == value

          @values[key] = value
          @changed[key] = value
        end

        def delete(key)
          self[key] = "" if @values.key?(key.to_s)
        end

        def changes
          @changed
        end
      end

      # What Action Cable's WebSocket and pubsub would have done, recorded for
      # the answer instead: the frames transmitted, the streams started and
      # stopped, a close, presence. One per call; the connection object sees
      # it as its websocket, the channel objects as their pubsub.
      class Socket
        attr_reader :transmissions, :started, :stopped, :cstate, :istate, :presence, :protocol

        def initialize(cstate: nil, istate: nil, protocol: nil)
          @transmissions = []
          @started = []
          @stopped = []
          @stop_all = false
          @closed = false
          @presence = nil
          @protocol = protocol
          @cstate = State.new(cstate)
          @istate = State.new(istate)
        end

        # ActionCable::Connection::WebSocket's interface, as Connection::Base uses it.
        def transmit(frame)
          @transmissions << frame
        end

        def close
          @closed = true
        end

        def alive?
          !@closed
        end

        def closed?
          @closed
        end

        def possible?
          true
        end

        def rack_response
          [-1, {}, []]
        end

        # A pubsub adapter's interface, as Channel::Streams uses it.
        def subscribe(stream, _handler = nil, on_success = nil)
          @started << stream unless @started.include?(stream)
          on_success&.call
        end

        def unsubscribe(stream, _handler = nil)
          stop_stream(stream)
        end

        def stop_stream(stream)
          @started.delete(stream)
          @stopped << stream unless @stopped.include?(stream)
          @istate.delete(WHISPER_KEY) if @istate[WHISPER_KEY] == stream
        end

        def stop_all_streams
          @stop_all = true
          @started.clear
          @istate.delete(WHISPER_KEY)
        end

        def stop_all_streams?
          @stop_all
        end

        def whisper_to(stream)
          @istate[WHISPER_KEY] = stream
        end

        def presence_join(stream, id, info)
          raise ArgumentError, "a presence id is needed" if id.nil? || id.to_s.empty?

          subscribe(stream)
          @istate[PRESENCE_KEY] = stream
          @presence = { type: "join", id: id.to_s, info: info }
        end

        def presence_leave(id)
          raise ArgumentError, "a presence id is needed" if id.nil? || id.to_s.empty?

          @presence = { type: "leave", id: id.to_s }
        end
      end
    end
  end
end
