# frozen_string_literal: true

require "action_cable"

module Pushgate
  # Broadcasting to the others: a broadcast may name one gateway connection
  # (its session id, the `sid` of the welcome and of every RPC call) that
  # does not get it, so the tab whose action caused a broadcast does not get
  # its own echo. `adapter: nsq` puts it in the envelope's "exclude".
  #
  #   ActionCable.server.broadcast("chat_1", data, exclude_socket: sid)
  #   ActionCable.server.broadcast("chat_1", data, to_others: true)  # the current socket id, see below
  #   ChatChannel.broadcast_to(room, data, to_others: true)
  #
  # The current socket id is the calling connection's sid inside an RPC call
  # (a channel's perform), and the X-Socket-ID request header in controllers
  # that include Pushgate::Cable::SocketId (the page sends the sid it got in
  # the welcome, @anycable/web's cable.sessionId).
  module Cable
    THREAD_KEY = :pushgate_cable_socket_id
    EXCLUDE_KEY = :pushgate_cable_exclude

    class << self
      def current_socket_id
        Thread.current[THREAD_KEY]
      end

      def with_socket_id(id)
        previous = Thread.current[THREAD_KEY]
        Thread.current[THREAD_KEY] = id.nil? || id.to_s.empty? ? nil : id.to_s
        yield
      ensure
        Thread.current[THREAD_KEY] = previous
      end

      # The connection the broadcast being made skips (read by the adapter).
      def current_exclusion
        Thread.current[EXCLUDE_KEY]
      end

      def excluding(id)
        return yield if id.nil? || id.to_s.empty?

        previous = Thread.current[EXCLUDE_KEY]
        Thread.current[EXCLUDE_KEY] = id.to_s
        begin
          yield
        ensure
          Thread.current[EXCLUDE_KEY] = previous
        end
      end

      def exclusion_for(exclude_socket, to_others)
        exclude_socket || (to_others ? current_socket_id : nil)
      end
    end

    # In a controller: `include Pushgate::Cable::SocketId`, and the
    # X-Socket-ID header of a request is the current socket id while it runs.
    module SocketId
      def self.included(base)
        base.around_action :pushgate_with_socket_id
      end

      private

      def pushgate_with_socket_id(&block)
        Pushgate::Cable.with_socket_id(request.headers["X-Socket-ID"], &block)
      end
    end

    module BroadcastOptions
      def broadcast(broadcasting, message, exclude_socket: nil, to_others: false, **options)
        Pushgate::Cable.excluding(Pushgate::Cable.exclusion_for(exclude_socket, to_others)) do
          super(broadcasting, message, **options)
        end
      end
    end

    module BroadcastToOptions
      def broadcast_to(model, message, exclude_socket: nil, to_others: false, **options)
        Pushgate::Cable.excluding(Pushgate::Cable.exclusion_for(exclude_socket, to_others)) do
          super(model, message, **options)
        end
      end
    end

    ActionCable::Server::Base.prepend(BroadcastOptions)
    ActionCable::Channel::Base.singleton_class.prepend(BroadcastToOptions)
  end
end
