# frozen_string_literal: true

require "pushgate/cable"

module Pushgate
  # View helpers for pages whose browsers listen through the gateway's /cable
  # (included in every view when Action View loads):
  #
  #   <%= pushgate_cable_meta_tag(current_user) %>    in the layout's <head>, instead of action_cable_meta_tag
  #   <%= pushgate_turbo_stream_from(@room, :messages) %>   what turbo_stream_from renders
  #   <%= pushgate_signed_stream_name(@room, :messages) %>  the signed name alone
  module CableHelper
    # <meta name="action-cable-url" content="wss://…/cable?jid=TOKEN">, which
    # @rails/actioncable's createConsumer() (and so Turbo) reads. The token
    # expires after `ttl` seconds; the gateway then closes the connection with
    # "token_expired" and the client reconnects with the URL it has, so pages
    # that live longer than the token should re-render the tag (or pass
    # createConsumer a function that fetches a fresh URL).
    #
    # A layout that also renders pages for visitors says what a visitor gets:
    # `pushgate_cable_meta_tag(current_user, anonymous: true)` (the URL without
    # a token, see Pushgate::Cable.url); without it, nil is an ArgumentError.
    def pushgate_cable_meta_tag(user, ttl: Pushgate.config.token_ttl, channels: nil, anonymous: false)
      tag("meta", name: "action-cable-url",
                  content: Pushgate::Cable.url(user, ttl: ttl, channels: channels, anonymous: anonymous))
    end

    def pushgate_signed_stream_name(*streamables)
      Pushgate::Cable.signed_stream_name(*streamables)
    end

    # <turbo-cable-stream-source channel="Turbo::StreamsChannel" signed-stream-name="…">,
    # as turbo-rails' turbo_stream_from renders it, for apps without turbo-rails
    # (with it, turbo_stream_from itself works once
    # config.turbo.signed_stream_verifier_key is the gateway's secret).
    def pushgate_turbo_stream_from(*streamables, **attributes)
      attributes[:channel] = "Turbo::StreamsChannel"
      attributes[:"signed-stream-name"] = Pushgate::Cable.signed_stream_name(*streamables)
      content_tag(:"turbo-cable-stream-source", "", attributes)
    end
  end
end

if defined?(ActiveSupport) && ActiveSupport.respond_to?(:on_load)
  ActiveSupport.on_load(:action_view) { include Pushgate::CableHelper }
end
