# frozen_string_literal: true

require "json"
require "action_cable"

# What Pushgate::Cable::RPC needs of Action Cable's classes, prepended to
# Connection::Base and Channel::Base when they load (the railtie, or requiring
# pushgate/cable/rpc). Inert under Rails' own server: each method falls
# through to Action Cable's unless the connection was built by the RPC
# endpoint (it has a pushgate_socket).
module Pushgate
  module Cable
    # Values kept between calls (identifiers, state_attr_accessor): records
    # as their GlobalID, JSON's own types as they are; what AnyCable's
    # serializer does, so the gateway may keep what anycable-rails wrote.
    module Serializer
      module_function

      def dump(value)
        return value.to_gid_param if value.respond_to?(:to_gid_param)

        case value
        when nil, true, false, Integer, Float, String then value
        when Symbol then value.to_s
        when Hash then value.to_h { |key, v| [key.to_s, dump(v)] }
        when Array then value.map { |v| dump(v) }
        else
          raise ArgumentError, "#{value.class} cannot be kept between RPC calls: give it a GlobalID " \
                               "(include GlobalID::Identification) or keep a string, number, hash or array"
        end
      end

      def load(value)
        case value
        when String
          # a record's to_gid_param (or a plain gid:// URI), else the string
          defined?(::GlobalID::Locator) ? (::GlobalID::Locator.locate(value) || value) : value
        when Hash then value.transform_values { |v| load(v) }
        when Array then value.map { |v| load(v) }
        else value
        end
      end
    end

    # Connection::Base under the RPC.
    module ConnectionHooks
      attr_reader :pushgate_socket

      # `state_attr_accessor :name` on a connection: kept in the gateway's
      # cstate between calls (a plain attribute under Rails' own server).
      module ClassMethods
        def state_attr_accessor(*names)
          names.each do |name|
            key = name.to_s
            define_method(name) do
              ivar = :"@#{key}"
              return instance_variable_get(ivar) if instance_variable_defined?(ivar)
              return nil unless pushgate_socket

              raw = pushgate_socket.cstate[key]
              instance_variable_set(ivar, raw.nil? || raw.empty? ? nil : Serializer.load(JSON.parse(raw)))
            end
            define_method(:"#{key}=") do |value|
              pushgate_socket.cstate[key] = JSON.generate(Serializer.dump(value)) if pushgate_socket
              instance_variable_set(:"@#{key}", value)
            end
          end
        end
      end

      # The welcome carries the gateway's session id, as anycable-rails'
      # does (@anycable/web keeps it to restore the session).
      def send_welcome_message
        return super unless pushgate_socket && @pushgate_sid

        transmit type: ActionCable::INTERNAL[:message_types][:welcome], sid: @pushgate_sid
      end

      # On later calls the identifiers come back serialized; the Action Cable
      # identifier is built from them without loading a record.
      def connection_identifier
        return super unless pushgate_socket && @pushgate_serialized_ids

        @connection_identifier ||= connection_gid(identifiers.map do |id|
          ivar = :"@#{id}"
          instance_variable_defined?(ivar) ? instance_variable_get(ivar) : @pushgate_serialized_ids[id.to_s]
        end.compact)
      end
    end

    # Channel::Base under the RPC: streams, whispers and timers.
    module ChannelHooks
      module ClassMethods
        # `state_attr_accessor :room` on a channel: kept in the
        # subscription's istate between calls (instance variables do not
        # survive: every call builds the channel anew).
        def state_attr_accessor(*names)
          names.each do |name|
            key = name.to_s
            define_method(name) do
              ivar = :"@#{key}"
              return instance_variable_get(ivar) if instance_variable_defined?(ivar)
              return nil unless pushgate_istate

              raw = pushgate_istate[key]
              instance_variable_set(ivar, raw.nil? || raw.empty? ? nil : Serializer.load(JSON.parse(raw)))
            end
            define_method(:"#{key}=") do |value|
              pushgate_istate[key] = JSON.generate(Serializer.dump(value)) if pushgate_istate
              instance_variable_set(:"@#{key}", value)
            end
          end
        end
      end

      attr_writer :pushgate_istate

      # `stream_from stream, whisper: true` (anycable-rails' option): the
      # client's whispers on this subscription go to that stream's readers.
      def stream_from(broadcasting, callback = nil, whisper: false, **options, &block)
        super(broadcasting, callback, **options, &block)
        whispers_to(broadcasting) if whisper
      end

      def stream_for(model, callback = nil, whisper: false, **options, &block)
        super(model, callback, **options, &block)
        whispers_to(broadcasting_for(model)) if whisper
      end

      # Names the stream this subscription's whispers go to (istate "$w"),
      # which the gateway serves itself, without a call.
      def whispers_to(broadcasting)
        pushgate_socket&.whisper_to(String(broadcasting))
      end

      # Each call builds a fresh channel that knows no streams, so a stop is
      # recorded as asked, not looked up.
      def stop_stream_from(broadcasting)
        pushgate_socket&.stop_stream(String(broadcasting))
        super
      end

      def stop_all_streams
        pushgate_socket&.stop_all_streams
        super
      end

      # There is no process for a timer to live in between calls.
      def start_periodic_timers
        return super unless pushgate_socket

        unless self.class.periodic_timers.empty?
          logger.warn "#{self.class.name}: periodically does not run under the pushgate RPC (no process between calls)"
        end
      end

      def stop_periodic_timers
        super unless pushgate_socket
      end

      def pushgate_socket
        connection.pushgate_socket if connection.respond_to?(:pushgate_socket)
      end

      def pushgate_istate
        @pushgate_istate || pushgate_socket&.istate
      end

      def pushgate_rejected?
        subscription_rejected?
      end
    end

    # Presence on a channel, with anycable-rails' API:
    #
    #   class ChatChannel < ApplicationCable::Channel
    #     include Pushgate::Cable::Presence
    #     def subscribed
    #       stream_for room
    #       join_presence(id: current_user.id, info: { name: current_user.name })
    #     end
    #   end
    #
    # The join names the stream whose presence it is (istate "$p"); the
    # gateway keeps the records, answers the clients' presence info and
    # removes the record when the connection ends.
    module Presence
      def join_presence(stream = nil, id: connection.connection_identifier, info: nil)
        socket = pushgate_socket or return
        stream ||= socket.started.first
        raise ArgumentError, "join_presence needs a stream (stream_from one first or name it)" if stream.nil?

        socket.presence_join(String(stream), id, info)
      end

      def leave_presence(id = connection.connection_identifier)
        pushgate_socket&.presence_leave(id)
      end
    end

    ActionCable::Connection::Base.prepend(ConnectionHooks)
    ActionCable::Connection::Base.extend(ConnectionHooks::ClassMethods)
    ActionCable::Channel::Base.prepend(ChannelHooks)
    ActionCable::Channel::Base.extend(ChannelHooks::ClassMethods)
  end
end
